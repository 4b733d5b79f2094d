package codec

import (
	"bytes"
	"fmt"
	"sync"

	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/opus"
	"github.com/pion/mediadevices/pkg/prop"
	"github.com/pion/mediadevices/pkg/wave"
)

// Opus stream constants: 48 kHz, 20 ms frames.
const (
	OpusSampleRate   = 48000
	OpusFrameSamples = 960 // per channel: 20 ms at 48 kHz
	// DefaultOpusBitrate suits one voice (Opus is transparent for speech
	// well below it).
	DefaultOpusBitrate = 32_000
	// DefaultOpusComplexity is libopus's complexity for voice. On 16 kHz
	// espeak-ng speech at 32 kbit/s (BenchmarkOpusSpeech) complexity 10
	// (libopus's default) takes 270 µs per 20 ms frame, 5 157 µs, 3 111 µs
	// and 1 78 µs, while the decoded waveform's SNR moves only from 12.2 dB
	// (10 and 5) to 11.9 dB (1; TestOpusSpeechComplexity): at twice the
	// bitrate one voice needs, the encoder's extra analysis buys almost
	// nothing.
	DefaultOpusComplexity = 1
)

// OpusOptions configures an Opus encoder.
type OpusOptions struct {
	// Channels is 1 (mono, the default when 0) or 2 (stereo, samples
	// interleaved L, R).
	Channels int
	// Bitrate is the target in bits per second, 6000..510000; 0 means
	// DefaultOpusBitrate.
	Bitrate int
	// SampleRate is the input's rate: 8000, 12000, 16000, 24000 or 48000
	// (0 means OpusSampleRate). The packets are the same Opus stream
	// whatever it is (RTP still clocks Opus at 48 kHz); encoding 16 kHz
	// speech at 16 kHz spares an upsampler and libopus's wideband analysis.
	SampleRate int
	// Complexity is libopus's complexity, 1..10 (0 means
	// DefaultOpusComplexity): lower is cheaper at a small cost in quality
	// per bit.
	Complexity int
}

// OpusFrameSamplesAt is one 20 ms frame per channel at a sample rate.
func OpusFrameSamplesAt(rate int) int { return rate / 50 }

func checkOpusRate(rate int) error {
	switch rate {
	case 8000, 12000, 16000, 24000, 48000:
		return nil
	}
	return fmt.Errorf("opus: sample rate %d Hz (want 8000, 12000, 16000, 24000 or 48000)", rate)
}

// OpusEncoder encodes 20 ms frames of PCM (48 kHz unless OpusOptions
// says otherwise) to Opus packets.
type OpusEncoder struct {
	channels int
	frame    int // samples per channel in 20 ms
	src      pcmSource
	rc       mdcodec.ReadCloser
	br       mdcodec.BitRateController

	mu     sync.Mutex // Encode and Close
	closed bool
	// silentRun counts the last frames in a row that were digital silence
	// and encoded to silentPkt.
	silentRun int
	silentPkt []byte
	// complexity is the one asked for, used for sound; digital silence is
	// encoded at complexity 10 (silentCx set), at which libopus settles on
	// one repeated packet within a few frames (at lower ones it may not).
	complexity int
	silentCx   bool
}

// silenceSteady is how many digital-silence frames in a row must encode to
// the same packet before that packet is sent for further silence without
// running the encoder (see encodeSilent).
const silenceSteady = 4

// pcmSource is the audio.Reader the mediadevices encoder pulls from: it
// yields the one frame Encode has put there, without copying.
type pcmSource struct {
	f32     wave.Float32Interleaved
	i16     wave.Int16Interleaved
	pending wave.Audio
}

func (s *pcmSource) Read() (wave.Audio, func(), error) {
	a := s.pending
	if a == nil {
		return nil, func() {}, errNoFrame
	}
	s.pending = nil
	return a, func() {}, nil
}

// NewOpusEncoder starts an Opus encoder (application VoIP, 48 kHz, 20 ms).
func NewOpusEncoder(opts OpusOptions) (*OpusEncoder, error) {
	if opts.Channels == 0 {
		opts.Channels = 1
	}
	if opts.Channels != 1 && opts.Channels != 2 {
		return nil, fmt.Errorf("opus: %d channels (want 1 or 2)", opts.Channels)
	}
	if opts.Bitrate == 0 {
		opts.Bitrate = DefaultOpusBitrate
	}
	if err := checkOpusBitrate(opts.Bitrate); err != nil {
		return nil, err
	}
	if opts.SampleRate == 0 {
		opts.SampleRate = OpusSampleRate
	}
	if err := checkOpusRate(opts.SampleRate); err != nil {
		return nil, err
	}
	if opts.Complexity == 0 {
		opts.Complexity = DefaultOpusComplexity
	}
	if opts.Complexity < 1 || opts.Complexity > 10 {
		return nil, fmt.Errorf("opus: complexity %d out of 1..10", opts.Complexity)
	}
	params, err := opus.NewParams()
	if err != nil {
		return nil, fmt.Errorf("opus: default parameters: %w", err)
	}
	params.BitRate = opts.Bitrate
	params.Latency = opus.Latency20ms
	e := &OpusEncoder{channels: opts.Channels, frame: OpusFrameSamplesAt(opts.SampleRate), complexity: opts.Complexity}
	info := wave.ChunkInfo{Len: e.frame, Channels: opts.Channels, SamplingRate: opts.SampleRate}
	e.src.f32.Size, e.src.i16.Size = info, info
	rc, err := params.BuildAudioEncoder(&e.src, prop.Media{Audio: prop.Audio{
		SampleRate: opts.SampleRate, ChannelCount: opts.Channels,
	}})
	if err != nil {
		return nil, fmt.Errorf("opus: start the encoder: %w", err)
	}
	br, ok := rc.Controller().(mdcodec.BitRateController)
	if !ok {
		_ = rc.Close()
		return nil, fmt.Errorf("opus: the encoder has no bitrate control")
	}
	if err := setOpusComplexity(rc, opts.Complexity); err != nil {
		_ = rc.Close()
		return nil, err
	}
	e.rc, e.br = rc, br
	return e, nil
}

func checkOpusBitrate(bps int) error {
	if bps < 6000 || bps > 510_000 {
		return fmt.Errorf("opus: bitrate %d bit/s out of 6000..510000", bps)
	}
	return nil
}

// Channels is the configured channel count.
func (e *OpusEncoder) Channels() int { return e.channels }

// EncodeFloat32 encodes one 20 ms frame: OpusFrameSamples·Channels samples,
// interleaved, nominally in −1..1. The packet is newly allocated, the
// caller's to keep.
func (e *OpusEncoder) EncodeFloat32(pcm []float32) ([]byte, error) {
	if len(pcm) != e.frame*e.channels {
		return nil, fmt.Errorf("opus: %d samples, want %d (20 ms, %d channels)", len(pcm), e.frame*e.channels, e.channels)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.src.f32.Data = pcm
	pkt, err := e.encodeSilent(allZero(pcm), &e.src.f32)
	e.src.f32.Data = nil
	return pkt, err
}

// EncodeInt16 is EncodeFloat32 for 16-bit samples.
func (e *OpusEncoder) EncodeInt16(pcm []int16) ([]byte, error) {
	if len(pcm) != e.frame*e.channels {
		return nil, fmt.Errorf("opus: %d samples, want %d (20 ms, %d channels)", len(pcm), e.frame*e.channels, e.channels)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.src.i16.Data = pcm
	pkt, err := e.encodeSilent(allZero(pcm), &e.src.i16)
	e.src.i16.Data = nil
	return pkt, err
}

// allZero reports digital silence.
func allZero[T float32 | int16](pcm []T) bool {
	for _, x := range pcm {
		if x != 0 {
			return false
		}
	}
	return true
}

// encodeSilent encodes a, which is digital silence if silent. libopus
// takes about three times as long on all-zero input as on speech (about
// 0.27 ms per 20 ms frame here), and an idle session sends nothing else.
// Once silenceSteady silent frames in a row have come out as the same
// packet, the encoder has settled and further silence gets a copy of that
// packet without running it: the decoder sees exactly the stream the
// encoder would have made, and the encoder resumes from the settled
// silence state it would have kept, so the first frame of sound after the
// gap matches the decoder's state as it would have anyway. e.mu is held.
func (e *OpusEncoder) encodeSilent(silent bool, a wave.Audio) ([]byte, error) {
	if e.closed {
		return nil, fmt.Errorf("opus: %w", ErrClosed)
	}
	if !silent {
		e.silentRun, e.silentPkt = 0, nil
		if err := e.setSilentComplexity(false); err != nil {
			return nil, err
		}
		return e.encode(a)
	}
	if e.silentRun >= silenceSteady {
		return bytes.Clone(e.silentPkt), nil
	}
	if err := e.setSilentComplexity(true); err != nil {
		return nil, err
	}
	pkt, err := e.encode(a)
	if err != nil {
		return nil, err
	}
	if e.silentRun > 0 && bytes.Equal(pkt, e.silentPkt) {
		e.silentRun++
	} else {
		e.silentRun, e.silentPkt = 1, bytes.Clone(pkt)
	}
	return pkt, nil
}

// setSilentComplexity switches libopus to complexity 10 for digital silence
// (on) or back to e.complexity for sound (off); a no-op when already so or
// when e.complexity is 10. e.mu is held.
func (e *OpusEncoder) setSilentComplexity(on bool) error {
	if on == e.silentCx || e.complexity == 10 {
		return nil
	}
	c := e.complexity
	if on {
		c = 10
	}
	if err := setOpusComplexity(e.rc, c); err != nil {
		return err
	}
	e.silentCx = on
	return nil
}

// encode runs one frame through the mediadevices encoder; e.mu is held.
func (e *OpusEncoder) encode(a wave.Audio) ([]byte, error) {
	if e.closed {
		return nil, fmt.Errorf("opus: %w", ErrClosed)
	}
	e.src.pending = a
	pkt, release, err := e.rc.Read()
	e.src.pending = nil
	if release != nil {
		release()
	}
	if err != nil {
		return nil, fmt.Errorf("opus: encode: %w", err)
	}
	return pkt, nil
}

// SetBitrate changes the target bitrate (bits per second, 6000..510000).
func (e *OpusEncoder) SetBitrate(bps int) error {
	if err := checkOpusBitrate(bps); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("opus: %w", ErrClosed)
	}
	e.silentRun, e.silentPkt = 0, nil
	if err := e.br.SetBitRate(bps); err != nil {
		return fmt.Errorf("opus: set bitrate %d: %w", bps, err)
	}
	return nil
}

// Close releases the encoder. Encoding fails after it; Close again is a
// no-op.
func (e *OpusEncoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if err := e.rc.Close(); err != nil {
		return fmt.Errorf("opus: close: %w", err)
	}
	return nil
}
