// Package wav decodes RIFF/WAVE audio into mono float32 samples and encodes
// 16-bit PCM WAV files.
//
// Supported input: PCM integer 8 (unsigned), 16, 24 and 32 bit, IEEE float 32
// and 64 bit, in WAVE_FORMAT_PCM (1), WAVE_FORMAT_IEEE_FLOAT (3) or
// WAVE_FORMAT_EXTENSIBLE (0xFFFE) with the PCM or IEEE float sub-format; one or
// two channels; sample rates MinSampleRate..MaxSampleRate (8..192 kHz).
// Stereo is downmixed to mono as
// (L+R)/2. Samples come out in −1..1: integers are divided by 2^(bits−1)
// (8-bit is unsigned with 128 as zero), floats are clamped to −1..1 and NaN
// becomes 0.
//
// The parser is lenient where real producers are sloppy and strict elsewhere:
//   - The RIFF size field is ignored.
//   - Unknown chunks (LIST, fact, cue, ...) are skipped, honouring the pad byte
//     that follows an odd-sized chunk.
//   - A data chunk whose declared size is 0xFFFFFFFF or runs past the end of
//     the input is read up to the end of the input, dropping a trailing partial
//     frame. espeak-ng --stdout writes such a header (it cannot seek back to
//     fix the sizes) and so do other streaming writers. Audio.Truncated
//     reports it.
//   - Everything after the first data chunk is ignored.
//
// Every other problem is an error that wraps one of the ErrorKind constants
// (ErrNotWAV, ErrMalformed, ErrUnsupportedFormat, ErrTruncated, ErrTooLarge),
// so callers can branch with errors.Is or KindOf; the message carries the
// detail. Errors from the underlying io.Reader are wrapped as they are. The
// decoder never panics, whatever the input (FuzzParse checks this), and never
// allocates more than the data actually present, however large the declared
// sizes.
//
// Untrusted input is checked before it is decoded: Probe reads only the
// headers of an in-memory file and refuses, with ErrTooLarge, a file whose
// duration (computed from the header) exceeds a limit, and Decoder decodes
// the data chunk in pieces of the caller's size, so a caller can convert
// (resample) audio without ever holding the whole file as samples.
package wav

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// ErrorKind classifies decoding errors. The constants of this type are
// comparable error values: errors.Is(err, wav.ErrTruncated) reports whether
// err (wrapped detail included) is of that kind.
type ErrorKind string

// Error implements error.
func (k ErrorKind) Error() string { return string(k) }

// Error kinds returned (wrapped with detail) by Parse and Decode.
const (
	// ErrNotWAV: the input does not start with a RIFF/WAVE header.
	ErrNotWAV ErrorKind = "wav: not a RIFF/WAVE file"
	// ErrMalformed: a header field is inconsistent (fmt chunk too short,
	// block align not matching the channels and sample size, data before
	// fmt, ...).
	ErrMalformed ErrorKind = "wav: malformed"
	// ErrUnsupportedFormat: a well-formed file in an encoding, channel count
	// or sample rate this package does not decode.
	ErrUnsupportedFormat ErrorKind = "wav: unsupported format"
	// ErrTruncated: the input ends before the fmt chunk is complete or
	// before a data chunk starts.
	ErrTruncated ErrorKind = "wav: truncated"
	// ErrTooLarge: the data holds more frames than Options.MaxFrames.
	ErrTooLarge ErrorKind = "wav: too large"
)

// KindOf returns the ErrorKind that err wraps, or "" when err is nil or is
// not a decoding error (an I/O error from the reader, for instance).
func KindOf(err error) ErrorKind {
	var k ErrorKind
	if errors.As(err, &k) {
		return k
	}
	return ""
}

// Sample encodings, the WAVE format tags.
const (
	FormatPCM        = 1
	FormatIEEEFloat  = 3
	FormatExtensible = 0xFFFE
)

// Limits of what the decoder accepts.
const (
	// MinSampleRate and MaxSampleRate bound the sample rate: below 8 kHz
	// is not speech audio, and a tiny rate is how a small file claims hours
	// of audio (a resampler to 16 kHz multiplies its length by 16000/rate).
	MinSampleRate = 8000
	MaxSampleRate = 192000
	MaxChannels   = 2
	// DefaultMaxFrames is the frame limit used when Options.MaxFrames is 0:
	// 2^26 frames, about 23 minutes at 48 kHz (256 MiB of float32 output).
	DefaultMaxFrames = 1 << 26
)

// MaxUploadDuration is the longest audio file a session takes: what its
// speech queue holds (the pipeline's DefaultMaxQueue is this constant).
// The control plane refuses longer uploads with Probe, so they never cross
// the network, and the worker refuses them again.
const MaxUploadDuration = 10 * time.Minute

// Options tunes decoding. The zero value is ready to use.
type Options struct {
	// MaxFrames is the largest number of frames (samples per channel)
	// accepted; more data than that gives ErrTooLarge. 0 means
	// DefaultMaxFrames.
	MaxFrames int
}

// Audio is decoded audio.
type Audio struct {
	// Samples is the audio downmixed to mono, each in −1..1.
	Samples []float32
	// SampleRate is the file's sample rate in Hz
	// (MinSampleRate..MaxSampleRate).
	SampleRate int
	// Channels is the file's channel count (1 or 2) before downmixing.
	Channels int
	// Format is FormatPCM or FormatIEEEFloat (an extensible file reports
	// its sub-format).
	Format int
	// BitsPerSample is the container size of one sample: 8, 16, 24, 32 or
	// 64.
	BitsPerSample int
	// Truncated is set when the data chunk declared more bytes than the
	// input held (streamed WAV); Samples holds the complete frames present.
	Truncated bool
}

// Duration is the length of the audio: len(Samples)/SampleRate.
func (a *Audio) Duration() time.Duration {
	if a.SampleRate <= 0 {
		return 0
	}
	sec := int64(len(a.Samples)) / int64(a.SampleRate)
	rem := int64(len(a.Samples)) % int64(a.SampleRate)
	return time.Duration(sec)*time.Second + time.Duration(rem*int64(time.Second)/int64(a.SampleRate))
}

// Parse decodes a complete WAV file held in memory.
func Parse(b []byte, opt Options) (*Audio, error) {
	return Decode(bytes.NewReader(b), opt)
}

// guidTail is bytes 2..15 of the KSDATAFORMAT_SUBTYPE_* GUIDs an extensible
// fmt chunk names its sub-format with; bytes 0..1 hold the format tag.
const guidTail = "\x00\x00\x00\x00\x10\x00\x80\x00\x00\xAA\x00\x38\x9B\x71"

// format is the decoded fmt chunk.
type format struct {
	tag        int
	channels   int
	rate       int
	blockAlign int
	bits       int
}

// Decode reads one WAV stream from r, which need not be seekable (a pipe from
// espeak-ng --stdout works). It reads until the data chunk ends, the input
// ends, or the frame limit is passed.
func Decode(r io.Reader, opt Options) (*Audio, error) {
	maxFrames := opt.MaxFrames
	if maxFrames <= 0 {
		maxFrames = DefaultMaxFrames
	}
	d, err := NewDecoder(r)
	if err != nil {
		return nil, err
	}
	h := d.Header()
	a := &Audio{SampleRate: h.SampleRate, Channels: h.Channels, Format: h.Format, BitsPerSample: h.BitsPerSample}
	// Never trust the declared size for allocation: start small and grow
	// with the data actually read.
	a.Samples = make([]float32, 0, min(max(h.Frames, 0), int64(maxFrames), 1<<16))
	var buf [chunkFrames]float32
	for {
		n, err := d.Read(buf[:])
		if len(a.Samples)+n > maxFrames {
			return nil, fmt.Errorf("%w: more than %d frames of audio", ErrTooLarge, maxFrames)
		}
		a.Samples = append(a.Samples, buf[:n]...)
		if err == io.EOF {
			a.Truncated = d.Truncated()
			return a, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func notWAV(magic []byte) error {
	return fmt.Errorf("%w: starts with %q", ErrNotWAV, magic)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// skip discards n bytes of r, returning io.ErrUnexpectedEOF if r ends first.
func skip(r io.Reader, n int64) error {
	if s, ok := r.(io.Seeker); ok {
		cur, err := s.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := s.Seek(0, io.SeekEnd)
			if err == nil {
				if end-cur < n {
					return io.ErrUnexpectedEOF
				}
				_, err = s.Seek(cur+n, io.SeekStart)
				return err
			}
		}
	}
	got, err := io.CopyN(io.Discard, r, n)
	if got < n && (err == nil || err == io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readFmt reads and validates a fmt chunk of the given size (the pad byte of
// an odd size included).
func readFmt(r io.Reader, size, off int64) (*format, error) {
	if size < 16 {
		return nil, fmt.Errorf("%w: fmt chunk at byte %d is %d bytes, want at least 16", ErrMalformed, off-8, size)
	}
	// Read at most 40 bytes (the extensible layout); skip the rest.
	var buf [40]byte
	n := min(size, int64(len(buf)))
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if isEOF(err) {
			return nil, fmt.Errorf("%w: input ends inside the fmt chunk at byte %d", ErrTruncated, off-8)
		}
		return nil, fmt.Errorf("wav: reading fmt chunk: %w", err)
	}
	if rest := size - n + size&1; rest > 0 {
		if err := skip(r, rest); err != nil {
			if isEOF(err) {
				return nil, fmt.Errorf("%w: input ends inside the fmt chunk at byte %d", ErrTruncated, off-8)
			}
			return nil, fmt.Errorf("wav: skipping the fmt chunk's tail: %w", err)
		}
	}
	le := binary.LittleEndian
	f := &format{
		tag:        int(le.Uint16(buf[0:])),
		channels:   int(le.Uint16(buf[2:])),
		rate:       int(le.Uint32(buf[4:])),
		blockAlign: int(le.Uint16(buf[12:])),
		bits:       int(le.Uint16(buf[14:])),
	}
	if f.tag == FormatExtensible {
		if n < 40 {
			return nil, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE fmt chunk is %d bytes, want 40", ErrMalformed, size)
		}
		if cb := le.Uint16(buf[16:]); cb < 22 {
			return nil, fmt.Errorf("%w: WAVE_FORMAT_EXTENSIBLE cbSize %d, want 22", ErrMalformed, cb)
		}
		valid := int(le.Uint16(buf[18:]))
		if valid > f.bits {
			return nil, fmt.Errorf("%w: %d valid bits in a %d-bit container", ErrMalformed, valid, f.bits)
		}
		if string(buf[26:40]) != guidTail {
			return nil, fmt.Errorf("%w: extensible sub-format GUID % x", ErrUnsupportedFormat, buf[24:40])
		}
		// Samples sit left-justified in the container, so decoding by the
		// container size is right whatever the valid bits.
		f.tag = int(le.Uint16(buf[24:]))
	}
	switch f.tag {
	case FormatPCM:
		if f.bits != 8 && f.bits != 16 && f.bits != 24 && f.bits != 32 {
			return nil, fmt.Errorf("%w: %d-bit integer PCM", ErrUnsupportedFormat, f.bits)
		}
	case FormatIEEEFloat:
		if f.bits != 32 && f.bits != 64 {
			return nil, fmt.Errorf("%w: %d-bit float", ErrUnsupportedFormat, f.bits)
		}
	default:
		return nil, fmt.Errorf("%w: format tag 0x%04x", ErrUnsupportedFormat, f.tag)
	}
	if f.channels < 1 || f.channels > MaxChannels {
		return nil, fmt.Errorf("%w: %d channels", ErrUnsupportedFormat, f.channels)
	}
	if f.rate < MinSampleRate || f.rate > MaxSampleRate {
		return nil, fmt.Errorf("%w: sample rate %d Hz, want %d..%d", ErrUnsupportedFormat, f.rate, MinSampleRate, MaxSampleRate)
	}
	if want := f.channels * f.bits / 8; f.blockAlign != want {
		return nil, fmt.Errorf("%w: block align %d, want %d for %d channels of %d bits", ErrMalformed, f.blockAlign, want, f.channels, f.bits)
	}
	return f, nil
}

// decodeFrames appends the mono samples of the whole frames in b to dst.
func decodeFrames(dst []float32, b []byte, f *format) []float32 {
	bps := f.bits / 8
	ch := f.channels
	n := len(b) / f.blockAlign
	for i := range n {
		fr := b[i*f.blockAlign : (i+1)*f.blockAlign]
		var sum float64
		for c := range ch {
			sum += sampleAt(fr[c*bps:(c+1)*bps], f.tag, f.bits)
		}
		v := float32(sum / float64(ch))
		dst = append(dst, v)
	}
	return dst
}

// sampleAt converts one little-endian sample to −1..1.
func sampleAt(s []byte, tag, bits int) float64 {
	le := binary.LittleEndian
	if tag == FormatIEEEFloat {
		var v float64
		if bits == 32 {
			v = float64(math.Float32frombits(le.Uint32(s)))
		} else {
			v = math.Float64frombits(le.Uint64(s))
		}
		switch {
		case math.IsNaN(v):
			return 0
		case v > 1:
			return 1
		case v < -1:
			return -1
		}
		return v
	}
	switch bits {
	case 8:
		return float64(int(s[0])-128) / 128
	case 16:
		return float64(int16(le.Uint16(s))) / (1 << 15)
	case 24:
		v := int32(uint32(s[0])<<8|uint32(s[1])<<16|uint32(s[2])<<24) >> 8
		return float64(v) / (1 << 23)
	default: // 32
		return float64(int32(le.Uint32(s))) / (1 << 31)
	}
}

// Encode16 encodes mono samples as a 16-bit PCM WAV file at the given rate.
// Samples are clamped to −1..1 and scaled by 32768 with rounding (1.0 becomes
// 32767), so Parse(Encode16(x)) returns x within 1/32768. NaN encodes as 0.
func Encode16(samples []float32, rate int) []byte {
	dataLen := 2 * len(samples)
	b := make([]byte, 44+dataLen)
	le := binary.LittleEndian
	copy(b[0:], "RIFF")
	le.PutUint32(b[4:], uint32(36+dataLen))
	copy(b[8:], "WAVEfmt ")
	le.PutUint32(b[16:], 16)
	le.PutUint16(b[20:], FormatPCM)
	le.PutUint16(b[22:], 1)
	le.PutUint32(b[24:], uint32(rate))
	le.PutUint32(b[28:], uint32(rate*2))
	le.PutUint16(b[32:], 2)
	le.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	le.PutUint32(b[40:], uint32(dataLen))
	for i, s := range samples {
		v := math.Round(float64(s) * 32768)
		switch {
		case math.IsNaN(v):
			v = 0
		case v > math.MaxInt16:
			v = math.MaxInt16
		case v < math.MinInt16:
			v = math.MinInt16
		}
		le.PutUint16(b[44+2*i:], uint16(int16(v)))
	}
	return b
}
