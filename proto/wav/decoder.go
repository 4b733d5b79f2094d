package wav

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Header is what the fmt and data chunk headers of a WAV file say.
type Header struct {
	// Format is FormatPCM or FormatIEEEFloat (an extensible file reports
	// its sub-format).
	Format int
	// Channels is 1 or 2; SampleRate is in MinSampleRate..MaxSampleRate.
	Channels, SampleRate int
	// BitsPerSample is the container size of one sample.
	BitsPerSample int
	// DataOffset is the byte offset of the data chunk's payload.
	DataOffset int64
	// Frames is the number of frames (samples per channel) of the audio:
	// what the data chunk declares, or, when it declares the streaming
	// size 0xFFFFFFFF, -1 from NewDecoder and the frames present from
	// Probe.
	Frames int64
	// Present is, from Probe, the whole frames of the data chunk that the
	// input holds (at most Frames): less than Frames for a streamed or
	// truncated file.
	Present int64
}

// Duration is the length of Frames frames at SampleRate (0 when Frames is
// unknown).
func (h Header) Duration() time.Duration { return h.DurationOf(h.Frames) }

// DurationOf is the length of n frames at SampleRate.
func (h Header) DurationOf(n int64) time.Duration {
	if h.SampleRate <= 0 || n <= 0 {
		return 0
	}
	sec, rem := n/int64(h.SampleRate), n%int64(h.SampleRate)
	return time.Duration(sec)*time.Second + time.Duration(rem*int64(time.Second)/int64(h.SampleRate))
}

// streamedSize is the data chunk size a streaming writer leaves in place.
const streamedSize = 0xFFFFFFFF

// chunkFrames is how many frames a Decoder reads from its input at a time.
const chunkFrames = 4096

// Probe reads the headers of a WAV file held in memory, without decoding
// its samples, and checks them: the format, channels and sample rate the
// decoder takes, and, when maxDuration is above 0, a duration of at most
// maxDuration. The duration comes from the data chunk's declared size (a
// file whose header claims more audio than the limit is refused however
// little data follows), or, for a streamed file (size 0xFFFFFFFF), from the
// bytes present. Errors wrap the ErrorKind constants; a file that is too
// long gives ErrTooLarge.
func Probe(b []byte, maxDuration time.Duration) (Header, error) {
	d, err := NewDecoder(bytes.NewReader(b))
	if err != nil {
		return Header{}, err
	}
	h := d.Header()
	h.Present = max(int64(len(b))-h.DataOffset, 0) / int64(d.f.blockAlign)
	if h.Frames < 0 {
		h.Frames = h.Present
	}
	h.Present = min(h.Present, h.Frames)
	if maxDuration > 0 && h.Duration() > maxDuration {
		return h, fmt.Errorf("%w: %v of audio (%d frames at %d Hz), limit %v", ErrTooLarge, h.Duration().Round(time.Millisecond), h.Frames, h.SampleRate, maxDuration)
	}
	return h, nil
}

// Decoder reads the samples of one WAV stream in pieces. NewDecoder reads the
// headers; Read then decodes the data chunk, a few thousand frames at a
// time, into the caller's buffer, so the memory it holds does not depend on
// the size of the input. Not safe for concurrent use.
type Decoder struct {
	r         io.Reader
	f         format
	h         Header
	remaining int64 // bytes of whole frames of the data chunk not yet read
	buf       []byte
	truncated bool
	done      bool
	err       error
}

// NewDecoder reads the RIFF header and the chunks up to the start of the
// data chunk's payload, and checks the format.
func NewDecoder(r io.Reader) (*Decoder, error) {
	var hdr [12]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if isEOF(err) {
			if n >= 4 && string(hdr[:4]) != "RIFF" {
				return nil, notWAV(hdr[:4])
			}
			return nil, fmt.Errorf("%w: %d-byte input is shorter than the RIFF header", ErrTruncated, n)
		}
		return nil, fmt.Errorf("wav: reading RIFF header: %w", err)
	}
	if string(hdr[:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		if string(hdr[:4]) == "RIFX" || string(hdr[:4]) == "RF64" {
			return nil, fmt.Errorf("%w: %q container", ErrUnsupportedFormat, hdr[:4])
		}
		return nil, fmt.Errorf("%w: header %q…%q, want \"RIFF\"…\"WAVE\"", ErrNotWAV, hdr[:4], hdr[8:12])
	}

	var f *format
	off := int64(12)
	for {
		var ch [8]byte
		n, err := io.ReadFull(r, ch[:])
		if err != nil {
			if isEOF(err) {
				if f == nil {
					return nil, fmt.Errorf("%w: input ends at byte %d with no fmt chunk", ErrTruncated, off+int64(n))
				}
				return nil, fmt.Errorf("%w: input ends at byte %d with no data chunk", ErrTruncated, off+int64(n))
			}
			return nil, fmt.Errorf("wav: reading chunk header at byte %d: %w", off, err)
		}
		id := string(ch[:4])
		size := int64(binary.LittleEndian.Uint32(ch[4:]))
		off += 8
		switch id {
		case "fmt ":
			if f != nil {
				return nil, fmt.Errorf("%w: second fmt chunk at byte %d", ErrMalformed, off-8)
			}
			pf, err := readFmt(r, size, off)
			if err != nil {
				return nil, err
			}
			f = pf
		case "data":
			if f == nil {
				return nil, fmt.Errorf("%w: data chunk at byte %d precedes the fmt chunk", ErrMalformed, off-8)
			}
			ba := int64(f.blockAlign)
			d := &Decoder{r: r, f: *f, remaining: size - size%ba,
				h: Header{Format: f.tag, Channels: f.channels, SampleRate: f.rate, BitsPerSample: f.bits, DataOffset: off, Frames: size / ba}}
			if size == streamedSize {
				d.h.Frames = -1
			}
			return d, nil
		default:
			if err := skip(r, size+size&1); err != nil {
				if isEOF(err) {
					if f == nil {
						return nil, fmt.Errorf("%w: input ends inside %q chunk at byte %d, before the fmt chunk", ErrTruncated, ch[:4], off-8)
					}
					return nil, fmt.Errorf("%w: input ends inside %q chunk at byte %d, before the data chunk", ErrTruncated, ch[:4], off-8)
				}
				return nil, fmt.Errorf("wav: skipping %q chunk at byte %d: %w", ch[:4], off-8, err)
			}
		}
		off += size + size&1
	}
}

// Header is what the file's headers say (Frames is -1 for a streamed file).
func (d *Decoder) Header() Header { return d.h }

// Truncated reports whether the input ended before the data chunk's
// declared end (a streamed WAV); Read then returned the complete frames
// present.
func (d *Decoder) Truncated() bool { return d.truncated }

// Read decodes up to len(dst) frames, downmixed to mono, into dst and
// returns how many. At the end of the audio it returns io.EOF (possibly
// with n > 0); an error from the input is returned wrapped.
func (d *Decoder) Read(dst []float32) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done || d.remaining <= 0 {
		d.done = true
		return 0, io.EOF
	}
	ba := int64(d.f.blockAlign)
	want := min(int64(len(dst)), chunkFrames, d.remaining/ba) * ba
	if int64(cap(d.buf)) < want {
		d.buf = make([]byte, chunkFrames*ba)
	}
	n, err := io.ReadFull(d.r, d.buf[:want])
	frames := n / int(ba) // a partial frame only happens at the end
	decodeFrames(dst[:0], d.buf[:frames*int(ba)], &d.f)
	d.remaining -= int64(n)
	switch {
	case err == nil:
		if d.remaining <= 0 {
			d.done = true
			return frames, io.EOF
		}
		return frames, nil
	case isEOF(err):
		d.done, d.truncated = true, true
		return frames, io.EOF
	}
	d.err = fmt.Errorf("wav: reading data chunk: %w", err)
	return frames, d.err
}
