// Package codec wraps the per-session media encoders behind a push API (the
// session hands a frame, or 20 ms of audio, and gets the packet back): VP8
// for video, driving libvpx directly in real-time mode, and Opus for audio,
// libopus through github.com/pion/mediadevices' codec package.
//
// # Build
//
// Both need cgo and the system libraries (Debian libvpx-dev, libopus-dev,
// pkg-config; scripts/setup.sh installs them). Build and test with
// -tags dynamic: without it mediadevices links the static libopus it ships
// in its module instead of the system one.
//
// # VP8: why libvpx directly (measured; see the benchmarks)
//
// mediadevices' VP8 encoder stamps frames from the wall clock, in
// microseconds where its timebase is milliseconds, so libvpx derives a
// wrong frame rate: paced 25 fps frames are budgeted as 30 fps (the stream
// runs at about 25/30 of its target) and a catch-up burst gets seconds of
// budget per frame. It also re-applies the whole configuration before every
// frame and copies each packet twice (the README's throughput section has
// the figures before and after the switch). The encoder here stamps frames on a
// 25 fps media clock of its own and sets, in the manner of WebRTC's VP8
// encoder: one thread, CBR, VPX_DL_REALTIME, no look-ahead, quantiser
// 2..56, cpu-used −12 (WebRTC uses −6 on x86, −12 on slow ARM; about 1 dB
// of luma PSNR for half the time of −6), keyframes capped at 9 average
// frames, denoiser, screen content mode and token partitions off. Its
// static threshold (encode breakout) is 1000: a macroblock whose prediction
// error from the reference is within that sum of squared differences is
// coded as a skip without the rest of the mode search, which most of a
// talking head is; against 500 it cuts a fifth of the encode time at the
// same PSNR on the default avatar (44.1 dB), where 2000 would cost 1.3 dB.
//
// The face is where viewers look and where a talking head changes; the
// rest (an avatar's idle motion, a backdrop) changes slowly. Given the face
// box (VP8Options.Focus), the encoder splits the frame into two segments and
// raises the breakout outside the face to 3000, so a background macroblock
// is coded again only once it has drifted that far from what the viewer
// shows. On the default avatar speaking, encoded back to back, against no
// region: 1.08 ms instead of 1.36 ms a frame, 1.05 instead of 1.32 Mbit/s,
// luma PSNR 44.5 dB in the face (the bits the background no longer takes go
// there) instead of 43.2, 41.5 dB outside it instead of 44.2.
//
// # Opus
//
// Application VoIP, complexity 1 (libopus defaults to 10; set through the
// libopus encoder mediadevices keeps private, see setOpusComplexity;
// digital silence is still encoded at 10, where it settles on one packet);
// four allocations per 20 ms frame (about 9 KiB mono), and each packet is a
// slice of a fresh 1 KiB array: copy packets that are kept for long.
// Digital silence, three times as slow to encode as speech, is encoded only
// until the encoder settles on one packet, which is then repeated (see
// encodeSilent).
//
// # Concurrency
//
// An encoder serves one session: Encode is not for concurrent use, but
// ForceKeyframe and SetBitrate may be called from another goroutine (an RTCP
// handler) while it runs.
package codec

import (
	"image"
	"sync"
	"sync/atomic"

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
	staticThreshold = 1000
	// backgroundStaticThreshold is the encode breakout outside the region
	// of interest (see VP8Options.Focus).
	backgroundStaticThreshold = 3000
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
	// Focus is the region of interest, the face: outside it (and a
	// macroblock's margin around it) a macroblock must change three times as
	// much before it is coded again (see the package comment). Empty means
	// none. SetFocus moves it.
	Focus image.Rectangle
}

// VP8Encoder is a session's live VP8 encoder: I420 frames in, VP8 frames
// out, a keyframe at least every KeyframeInterval frames and whenever
// ForceKeyframe asked for one.
type VP8Encoder struct {
	enc      *vpxEncoder
	interval int

	// Set from any goroutine, taken by the next Encode.
	forceKey atomic.Bool
	bitrate  atomic.Int64 // bits/s asked by SetBitrate, 0 when none is pending

	mu       sync.Mutex // Encode and Close
	sinceKey int        // frames encoded since the last keyframe
	started  bool
}

// Error is the type of this package's sentinel errors.
type Error string

// Error implements error.
func (e Error) Error() string { return string(e) }

const (
	// ErrClosed is returned by Encode after Close.
	ErrClosed Error = "codec: encoder closed"
	// errNoFrame: the mediadevices Opus pipeline read twice for one frame.
	errNoFrame Error = "codec: encoder read without a pending frame"
)

// NewVP8Encoder starts a VP8 encoder.
func NewVP8Encoder(opts VP8Options) (*VP8Encoder, error) {
	if err := checkVP8Options("vp8", &opts); err != nil {
		return nil, err
	}
	enc, err := newVPXEncoder("vp8", opts)
	if err != nil {
		return nil, err
	}
	return &VP8Encoder{enc: enc, interval: opts.KeyframeInterval}, nil
}

// Encode encodes one frame and returns its VP8 frame (the payload an RTP VP8
// payloader splits into packets; newly allocated, the caller's to keep) and
// whether it is a keyframe. Call it once per 25 fps frame: the rate control
// budgets each frame as 1/25 s of the bitrate.
func (e *VP8Encoder) Encode(f *frame.I420) (pkt []byte, keyframe bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if bps := e.bitrate.Swap(0); bps != 0 {
		if err := e.enc.setBitrate(int(bps)); err != nil {
			return nil, false, err
		}
	}
	key := !e.started || e.sinceKey >= e.interval
	if e.forceKey.Swap(false) {
		key = true
	}
	pkt, keyframe, err = e.enc.encode(f, key)
	if err != nil {
		return nil, false, err
	}
	e.started = true
	if keyframe {
		e.sinceKey = 1
	} else {
		e.sinceKey++
	}
	return pkt, keyframe, nil
}

// IsVP8Keyframe reports whether pkt is a VP8 keyframe: bit 0 of the frame
// tag (RFC 6386, section 9.1) is 0.
func IsVP8Keyframe(pkt []byte) bool {
	return len(pkt) >= 3 && pkt[0]&1 == 0
}

// SetFocus moves the region of interest (VP8Options.Focus) from the next
// frame on; an unchanged one costs nothing. Call it from the goroutine that
// calls Encode.
func (e *VP8Encoder) SetFocus(r image.Rectangle) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.enc.setFocus(r)
}

// ForceKeyframe makes the next encoded frame a keyframe (on a viewer's PLI or
// FIR, or when a viewer joins).
func (e *VP8Encoder) ForceKeyframe() { e.forceKey.Store(true) }

// SetBitrate changes the target bitrate (bits per second) from the next
// frame on.
func (e *VP8Encoder) SetBitrate(bps int) error {
	if err := checkVP8Bitrate("vp8", bps); err != nil {
		return err
	}
	e.bitrate.Store(int64(bps))
	return nil
}

// Close releases the encoder. Encode fails after it; Close again is a no-op.
func (e *VP8Encoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.enc.close()
	return nil
}
