package wav

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// TestProbe checks the header probe that guards uploads: the rate and
// channel rules, and the duration computed from the header against the
// limit, before any sample is decoded.
func TestProbe(t *testing.T) {
	const limit = 10 * time.Minute
	mono8k := func(n int) spec { return spec{tag: 1, channels: 1, rate: 8000, bits: 8, data: make([]byte, n)} }
	tests := []struct {
		name       string
		in         []byte
		want       error
		wantFrames int64
		wantDur    time.Duration
	}{
		{"one second 16 kHz", build(spec{tag: 1, channels: 1, rate: 16000, bits: 16, data: make([]byte, 32000)}), nil, 16000, time.Second},
		{"stereo 48 kHz float", build(spec{tag: 3, channels: 2, rate: 48000, bits: 32, data: make([]byte, 8*4800)}), nil, 4800, 100 * time.Millisecond},
		{"8 kHz lowest rate", build(mono8k(8000)), nil, 8000, time.Second},
		{"192 kHz highest rate", build(spec{tag: 1, channels: 1, rate: 192000, bits: 16, data: make([]byte, 384)}), nil, 192, time.Millisecond},
		{"exactly the limit", build(spec{tag: 1, channels: 1, rate: 8000, bits: 8, dataSize: 8000 * 600, data: make([]byte, 10)}), nil, 8000 * 600, limit},
		{"streamed: duration from the bytes present", build(spec{tag: 1, channels: 1, rate: 16000, bits: 16, dataSize: streamedSize, data: make([]byte, 3200)}), nil, 1600, 100 * time.Millisecond},
		// The attack: 1 MB of 8-bit audio claiming 1 Hz is 11.6 days.
		{"1 Hz", build(spec{tag: 1, channels: 1, rate: 1, bits: 8, data: make([]byte, 1<<20)}), ErrUnsupportedFormat, 0, 0},
		{"7999 Hz", build(spec{tag: 1, channels: 1, rate: 7999, bits: 16, data: make([]byte, 4)}), ErrUnsupportedFormat, 0, 0},
		{"192001 Hz", build(spec{tag: 1, channels: 1, rate: 192001, bits: 16, data: make([]byte, 4)}), ErrUnsupportedFormat, 0, 0},
		{"3 channels", build(spec{tag: 1, channels: 3, rate: 16000, bits: 16, data: make([]byte, 6)}), ErrUnsupportedFormat, 0, 0},
		{"header claims 2^31 samples", build(spec{tag: 1, channels: 1, rate: 8000, bits: 8, dataSize: 1 << 31, data: make([]byte, 1000)}), ErrTooLarge, 1 << 31, 0},
		{"header claims 2^31 samples at 192 kHz", build(spec{tag: 1, channels: 1, rate: 192000, bits: 8, dataSize: 1 << 31, data: make([]byte, 1000)}), ErrTooLarge, 1 << 31, 0},
		{"one frame over the limit", build(spec{tag: 1, channels: 1, rate: 8000, bits: 8, dataSize: 8000*600 + 1, data: make([]byte, 10)}), ErrTooLarge, 8000*600 + 1, 0},
		{"streamed over the limit", build(spec{tag: 1, channels: 1, rate: 8000, bits: 8, dataSize: streamedSize, data: make([]byte, 8000*600+8)}), ErrTooLarge, 8000*600 + 8, 0},
		{"not WAV", []byte("ID3\x04 an mp3, say"), ErrNotWAV, 0, 0},
		{"no data chunk", build(mono8k(0))[:36], ErrTruncated, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Probe(tc.in, limit)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Probe: %v, want %v", err, tc.want)
			}
			if tc.want != nil && tc.want != ErrTooLarge {
				return
			}
			if h.Frames != tc.wantFrames {
				t.Errorf("frames %d, want %d", h.Frames, tc.wantFrames)
			}
			if tc.want == nil && h.Duration() != tc.wantDur {
				t.Errorf("duration %v, want %v", h.Duration(), tc.wantDur)
			}
			if h.DataOffset < 44 {
				t.Errorf("data offset %d", h.DataOffset)
			}
		})
	}
	// No limit: only the format is checked.
	if _, err := Probe(tests[10].in, 0); err != nil {
		t.Errorf("Probe without a limit: %v", err)
	}
}

// TestDecoderPieces reads a file through Decoder in pieces of several sizes
// and checks that they join to what Parse returns.
func TestDecoderPieces(t *testing.T) {
	var data []byte
	for i := range 10000 {
		data = append(data, u16s(int16(i*7), int16(-i*3))...)
	}
	b := build(spec{tag: 1, channels: 2, rate: 44100, bits: 16, data: data})
	whole, err := Parse(b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, piece := range []int{1, 7, 4096, 5000, 20000} {
		d, err := NewDecoder(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if h := d.Header(); h.Frames != 10000 || h.SampleRate != 44100 || h.Channels != 2 {
			t.Fatalf("header %+v", h)
		}
		var got []float32
		buf := make([]float32, piece)
		for {
			n, err := d.Read(buf)
			if n > piece || n > chunkFrames {
				t.Fatalf("piece %d: read %d frames", piece, n)
			}
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != len(whole.Samples) {
			t.Fatalf("piece %d: %d samples, want %d", piece, len(got), len(whole.Samples))
		}
		for i := range got {
			if got[i] != whole.Samples[i] {
				t.Fatalf("piece %d: sample %d = %v, want %v", piece, i, got[i], whole.Samples[i])
			}
		}
		if n, err := d.Read(buf); n != 0 || err != io.EOF {
			t.Errorf("read after the end: %d, %v", n, err)
		}
	}
}
