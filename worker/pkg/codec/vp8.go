// Package codec wraps the per-session media encoders: VP8 for video (libvpx,
// real-time mode) and Opus for audio (libopus), both through
// github.com/pion/mediadevices' codec packages, behind a push API: the
// session hands a frame (or 20 ms of audio) and gets the packet back.
//
// # Build
//
// Both need cgo and the system libraries (Debian libvpx-dev, libopus-dev,
// pkg-config; scripts/setup.sh installs them). Build and test with
// -tags dynamic: without it mediadevices links the static libopus it ships
// in its module instead of the system one.
//
// # What mediadevices does underneath (measured; see the benchmarks)
//
//   - VP8: timestamps come from the wall clock at each Encode, not from the
//     media clock, and are passed in microseconds where the encoder's
//     timebase is milliseconds. libvpx derives the frame rate, and so the
//     bits it spends per frame, from them: frames encoded 10 ms or more
//     apart are budgeted as 30 fps (libvpx's fallback for an implausible
//     rate), so at 25 fps the stream runs at about 25/30 of the target or
//     less; frames encoded back to back (a catch-up burst, a benchmark) get
//     a budget of seconds each and come out larger. Call Encode paced by
//     the media clock, never in bursts. The encoder re-applies its
//     configuration before every frame and makes three allocations per
//     frame, two of them copies of the packet.
//   - mediadevices sets no speed, and libvpx's automatic real-time speed
//     slows down to fill the frame interval: about 11 ms per 512×512
//     talking-head frame here. VP8Encoder reaches the libvpx context
//     mediadevices keeps private (see setVP8Controls) and sets: cpu-used
//     −12 (WebRTC uses −6 on x86, −12 on slow ARM; on the default avatar
//     −12 costs about 1 dB of luma PSNR, still above 42 dB at 1.5 Mbit/s,
//     for about half the encode time of −6), a static threshold (encode
//     breakout) of 500 — a macroblock within that sum of squared
//     differences of its prediction is skipped without the rest of the
//     mode search, which most of a talking head is — the denoiser, screen
//     content mode and token partitions off (one partition), and keyframes
//     capped at 9 average frames. One thread (libvpx's default:
//     mediadevices does not set g_threads), VPX_DL_REALTIME, no lag, no
//     error-resilient mode, CBR. The rate-control buffers stay at libvpx's
//     defaults (6 s buffer): mediadevices does not expose them.
//   - Opus: application VoIP, complexity 5 (libopus defaults to 10; set
//     through the libopus encoder mediadevices keeps private, see
//     setOpusComplexity; digital silence is still encoded at 10, where it
//     settles on one packet); four allocations
//     per 20 ms frame (about 9 KiB mono), and each packet is a slice of a
//     fresh 1 KiB array: copy packets that are kept for long. Digital
//     silence, three times as slow to encode as speech, is encoded only
//     until the encoder settles on one packet, which is then repeated (see
//     encodeSilent).
//
// # Concurrency
//
// An encoder serves one session: Encode is not for concurrent use, but
// ForceKeyframe and SetBitrate may be called from another goroutine (an RTCP
// handler) while it runs.
package codec

import (
	"errors"
	"fmt"
	"image"
	"sync"

	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/vpx"
	"github.com/pion/mediadevices/pkg/prop"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// Defaults of VP8Options.
const (
	DefaultVP8Bitrate       = 1_500_000 // bits/s
	DefaultKeyframeInterval = 50        // frames: 2 s at 25 fps
	DefaultVP8Speed         = 12        // libvpx cpu-used −12 (see the package comment)
	VP8FrameRate            = 25        // frames per second Encode is meant to be called at
	// maxIntraPct caps a keyframe at 9 average frames, WebRTC's cap for a
	// 600 ms buffer at 30 fps.
	maxIntraPct     = 900
	staticThreshold = 500
)

// VP8Options configures a VP8 encoder.
type VP8Options struct {
	// Width and Height are the frame size in pixels (even). Every frame
	// passed to Encode must have this size.
	Width, Height int
	// Bitrate is the target in bits per second; 0 means DefaultVP8Bitrate.
	Bitrate int
	// KeyframeInterval is the most frames between two keyframes; 0 means
	// DefaultKeyframeInterval.
	KeyframeInterval int
	// Speed is libvpx's real-time speed, 1..16 (cpu-used −Speed): higher
	// is faster at some cost in quality per bit; 0 means DefaultVP8Speed.
	Speed int
}

// VP8Encoder encodes I420 frames to VP8 (libvpx, real-time deadline, CBR).
type VP8Encoder struct {
	w, h int
	src  frameSource
	rc   mdcodec.ReadCloser
	kf   mdcodec.KeyFrameController
	br   mdcodec.BitRateController

	mu     sync.Mutex // Encode and Close
	closed bool
}

// frameSource is the video.Reader the mediadevices encoder pulls from: it
// yields the one frame Encode has put there.
type frameSource struct {
	img *image.YCbCr
}

// Error is the type of this package's sentinel errors.
type Error string

// Error implements error.
func (e Error) Error() string { return string(e) }

const (
	// ErrClosed is returned by Encode after Close.
	ErrClosed Error = "codec: encoder closed"
	// errNoFrame: the mediadevices pipeline read twice for one frame.
	errNoFrame Error = "codec: encoder read without a pending frame"
)

func (s *frameSource) Read() (image.Image, func(), error) {
	img := s.img
	if img == nil {
		return nil, func() {}, errNoFrame
	}
	s.img = nil
	return img, func() {}, nil
}

// NewVP8Encoder starts a VP8 encoder.
func NewVP8Encoder(opts VP8Options) (*VP8Encoder, error) {
	if opts.Width < 2 || opts.Height < 2 || opts.Width%2 != 0 || opts.Height%2 != 0 || opts.Width > frame.MaxDim || opts.Height > frame.MaxDim {
		return nil, fmt.Errorf("vp8: frame size %dx%d (want even, 2..%d)", opts.Width, opts.Height, frame.MaxDim)
	}
	if opts.Bitrate == 0 {
		opts.Bitrate = DefaultVP8Bitrate
	}
	if opts.Bitrate < 10_000 || opts.Bitrate > 100_000_000 {
		return nil, fmt.Errorf("vp8: bitrate %d bit/s out of 10k..100M", opts.Bitrate)
	}
	if opts.KeyframeInterval == 0 {
		opts.KeyframeInterval = DefaultKeyframeInterval
	}
	if opts.KeyframeInterval < 1 {
		return nil, fmt.Errorf("vp8: keyframe interval %d", opts.KeyframeInterval)
	}
	if opts.Speed == 0 {
		opts.Speed = DefaultVP8Speed
	}
	if opts.Speed < 1 || opts.Speed > 16 {
		return nil, fmt.Errorf("vp8: speed %d out of 1..16", opts.Speed)
	}
	params, err := vpx.NewVP8Params()
	if err != nil {
		return nil, fmt.Errorf("vp8: default parameters: %w", err)
	}
	params.BitRate = opts.Bitrate
	params.KeyFrameInterval = opts.KeyframeInterval
	// Real-time settings in the manner of WebRTC's own VP8 encoder: CBR,
	// no look-ahead, quantiser 2..56, undershoot freely, overshoot little.
	params.RateControlEndUsage = vpx.RateControlCBR
	params.LagInFrames = 0
	params.RateControlMinQuantizer = 2
	params.RateControlMaxQuantizer = 56
	params.RateControlUndershootPercent = 100
	params.RateControlOvershootPercent = 15

	e := &VP8Encoder{w: opts.Width, h: opts.Height}
	rc, err := params.BuildVideoEncoder(&e.src, prop.Media{Video: prop.Video{
		Width: opts.Width, Height: opts.Height, FrameRate: VP8FrameRate,
	}})
	if err != nil {
		return nil, fmt.Errorf("vp8: start the encoder: %w", err)
	}
	e.rc = rc
	ctl := vp8Controls{
		speed:            opts.Speed,
		staticThreshold:  staticThreshold,
		noiseSensitivity: 0,
		tokenPartitions:  0,
		maxIntraPct:      maxIntraPct,
		screenContent:    0,
	}
	if err := setVP8Controls(rc, ctl); err != nil {
		_ = rc.Close()
		return nil, err
	}
	c := rc.Controller()
	var ok1, ok2 bool
	e.kf, ok1 = c.(mdcodec.KeyFrameController)
	e.br, ok2 = c.(mdcodec.BitRateController)
	if !ok1 || !ok2 {
		_ = rc.Close()
		return nil, errors.New("vp8: the encoder has no keyframe or bitrate control")
	}
	return e, nil
}

// Encode encodes one frame and returns its VP8 frame (the payload an RTP VP8
// payloader splits into packets; newly allocated, the caller's to keep) and
// whether it is a keyframe. A frame the rate control drops comes back as an
// empty packet.
func (e *VP8Encoder) Encode(f *frame.I420) (pkt []byte, keyframe bool, err error) {
	if f.Width() != e.w || f.Height() != e.h {
		return nil, false, fmt.Errorf("vp8: frame is %dx%d, encoder is %dx%d", f.Width(), f.Height(), e.w, e.h)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, false, fmt.Errorf("vp8: %w", ErrClosed)
	}
	e.src.img = &f.YCbCr
	pkt, release, err := e.rc.Read()
	e.src.img = nil
	if release != nil {
		release()
	}
	if err != nil {
		return nil, false, fmt.Errorf("vp8: encode: %w", err)
	}
	return pkt, IsVP8Keyframe(pkt), nil
}

// IsVP8Keyframe reports whether pkt is a VP8 keyframe: bit 0 of the frame
// tag (RFC 6386, section 9.1) is 0.
func IsVP8Keyframe(pkt []byte) bool {
	return len(pkt) >= 3 && pkt[0]&1 == 0
}

// ForceKeyframe makes the next encoded frame a keyframe (on a viewer's PLI or
// FIR, or when a viewer joins).
func (e *VP8Encoder) ForceKeyframe() {
	_ = e.kf.ForceKeyFrame() // mediadevices' never fails
}

// SetBitrate changes the target bitrate (bits per second) from the next
// frame on.
func (e *VP8Encoder) SetBitrate(bps int) error {
	if bps < 10_000 || bps > 100_000_000 {
		return fmt.Errorf("vp8: bitrate %d bit/s out of 10k..100M", bps)
	}
	if err := e.br.SetBitRate(bps); err != nil {
		return fmt.Errorf("vp8: set bitrate %d: %w", bps, err)
	}
	return nil
}

// Close releases the encoder. Encode fails after it; Close again is a no-op.
func (e *VP8Encoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if err := e.rc.Close(); err != nil {
		return fmt.Errorf("vp8: close: %w", err)
	}
	return nil
}
