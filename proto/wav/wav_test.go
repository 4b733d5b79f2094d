package wav

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// spec describes a file for the test builder.
type spec struct {
	tag        int // format tag written in fmt (FormatExtensible for extensible)
	sub        int // sub-format when tag is FormatExtensible
	channels   int
	rate       int
	bits       int
	blockAlign int    // 0: computed
	fmtSize    int    // 0: 16, or 40 for extensible
	dataSize   uint32 // 0: computed from data
	before     []byte // raw chunks between the RIFF header and fmt
	between    []byte // raw chunks between fmt and data
	after      []byte // raw bytes after the data chunk
	data       []byte // raw sample bytes
}

func chunk(id string, body []byte) []byte {
	b := []byte(id)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	if len(body)%2 == 1 {
		b = append(b, 0)
	}
	return b
}

func build(s spec) []byte {
	le := binary.LittleEndian
	ba := s.blockAlign
	if ba == 0 {
		ba = s.channels * s.bits / 8
	}
	fsz := s.fmtSize
	if fsz == 0 {
		fsz = 16
		if s.tag == FormatExtensible {
			fsz = 40
		}
	}
	f := make([]byte, max(fsz, 40))
	le.PutUint16(f[0:], uint16(s.tag))
	le.PutUint16(f[2:], uint16(s.channels))
	le.PutUint32(f[4:], uint32(s.rate))
	le.PutUint32(f[8:], uint32(s.rate*ba))
	le.PutUint16(f[12:], uint16(ba))
	le.PutUint16(f[14:], uint16(s.bits))
	if s.tag == FormatExtensible {
		le.PutUint16(f[16:], 22)
		le.PutUint16(f[18:], uint16(s.bits))
		le.PutUint32(f[20:], 3)
		le.PutUint16(f[24:], uint16(s.sub))
		copy(f[26:], guidTail)
	}
	f = f[:fsz]
	body := []byte("WAVE")
	body = append(body, s.before...)
	body = append(body, chunk("fmt ", f)...)
	body = append(body, s.between...)
	ds := s.dataSize
	if ds == 0 {
		ds = uint32(len(s.data))
	}
	body = append(body, "data"...)
	body = le.AppendUint32(body, ds)
	body = append(body, s.data...)
	if len(s.data)%2 == 1 && s.after != nil {
		body = append(body, 0)
	}
	body = append(body, s.after...)
	out := []byte("RIFF")
	out = le.AppendUint32(out, uint32(len(body)))
	return append(out, body...)
}

func u16s(v ...int16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, uint16(x))
	}
	return b
}

func i32s(v ...int32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func f32s(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func f64s(v ...float64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func i24s(v ...int32) []byte {
	var b []byte
	for _, x := range v {
		u := uint32(x)
		b = append(b, byte(u), byte(u>>8), byte(u>>16))
	}
	return b
}

func TestParseFormats(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		name      string
		s         spec
		want      []float32
		wantFmt   int
		truncated bool
	}{
		{"pcm8 mono", spec{tag: 1, channels: 1, rate: 8000, bits: 8, data: []byte{0, 128, 255, 192}},
			[]float32{-1, 0, 127.0 / 128, 0.5}, FormatPCM, false},
		{"pcm16 mono", spec{tag: 1, channels: 1, rate: 16000, bits: 16, data: u16s(0, 16384, -32768, 32767)},
			[]float32{0, 0.5, -1, 32767.0 / 32768}, FormatPCM, false},
		{"pcm16 stereo downmix", spec{tag: 1, channels: 2, rate: 44100, bits: 16, data: u16s(16384, -8192, -32768, -32768)},
			[]float32{0.125, -1}, FormatPCM, false},
		{"pcm24 mono", spec{tag: 1, channels: 1, rate: 48000, bits: 24, data: i24s(-1<<23, 1<<22, 1<<23-1, -1)},
			[]float32{-1, 0.5, float32(float64(1<<23-1) / (1 << 23)), float32(-1.0 / (1 << 23))}, FormatPCM, false},
		{"pcm32 stereo", spec{tag: 1, channels: 2, rate: 96000, bits: 32, data: i32s(math.MinInt32, 0, 1<<30, 1<<29)},
			[]float32{-0.5, 0.375}, FormatPCM, false},
		{"float32 clamps and NaN", spec{tag: 3, channels: 1, rate: 22050, bits: 32, data: f32s(0.25, 1.5, -7, nan)},
			[]float32{0.25, 1, -1, 0}, FormatIEEEFloat, false},
		{"float64 stereo", spec{tag: 3, channels: 2, rate: 192000, bits: 64, data: f64s(0.5, 0.25, math.Inf(1), math.Inf(-1))},
			[]float32{0.375, 0}, FormatIEEEFloat, false},
		{"extensible pcm16", spec{tag: FormatExtensible, sub: 1, channels: 2, rate: 16000, bits: 16, data: u16s(8192, 8192)},
			[]float32{0.25}, FormatPCM, false},
		{"extensible float32", spec{tag: FormatExtensible, sub: 3, channels: 1, rate: 8000, bits: 32, data: f32s(-0.75)},
			[]float32{-0.75}, FormatIEEEFloat, false},
		{"extensible pcm32", spec{tag: FormatExtensible, sub: 1, channels: 1, rate: 48000, bits: 32, data: i32s(1 << 30)},
			[]float32{0.5}, FormatPCM, false},
		{"unknown chunks and odd padding", spec{tag: 1, channels: 1, rate: 16000, bits: 16,
			before:  chunk("JUNK", []byte{1, 2, 3}),
			between: append(chunk("LIST", []byte("INFOISFT\x05\x00\x00\x00Lavf\x00")), chunk("fact", []byte{1, 0, 0, 0})...),
			after:   chunk("id3 ", []byte{9}),
			data:    u16s(16384)},
			[]float32{0.5}, FormatPCM, false},
		{"fmt chunk with cbSize", spec{tag: 1, channels: 1, rate: 16000, bits: 16, fmtSize: 18, data: u16s(-16384)},
			[]float32{-0.5}, FormatPCM, false},
		{"odd fmt chunk", spec{tag: 1, channels: 1, rate: 16000, bits: 16, fmtSize: 17, data: u16s(-16384)},
			[]float32{-0.5}, FormatPCM, false},
		{"odd data chunk, pcm8", spec{tag: 1, channels: 1, rate: 8000, bits: 8, data: []byte{128, 0, 255}, after: chunk("LIST", []byte("xx"))},
			[]float32{0, -1, 127.0 / 128}, FormatPCM, false},
		{"data size 0xFFFFFFFF", spec{tag: 1, channels: 1, rate: 22050, bits: 16, dataSize: 0xFFFFFFFF, data: u16s(16384, 8192)},
			[]float32{0.5, 0.25}, FormatPCM, true},
		{"data size past EOF, partial frame", spec{tag: 1, channels: 2, rate: 22050, bits: 16, dataSize: 1000, data: append(u16s(16384, 16384), 7, 7, 7)},
			[]float32{0.5}, FormatPCM, true},
		{"data size shorter than the data", spec{tag: 1, channels: 1, rate: 8000, bits: 16, dataSize: 2, data: u16s(16384, 8192)},
			[]float32{0.5}, FormatPCM, false},
		{"empty data", spec{tag: 1, channels: 1, rate: 8000, bits: 16},
			[]float32{}, FormatPCM, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := build(tc.s)
			for _, mode := range []string{"Parse", "Decode one byte at a time"} {
				var a *Audio
				var err error
				if mode == "Parse" {
					a, err = Parse(b, Options{})
				} else {
					a, err = Decode(iotest.OneByteReader(bytes.NewReader(b)), Options{})
				}
				if err != nil {
					t.Fatalf("%s: %v", mode, err)
				}
				if len(a.Samples) != len(tc.want) {
					t.Fatalf("%s: got %d samples %v, want %v", mode, len(a.Samples), a.Samples, tc.want)
				}
				for i := range tc.want {
					if a.Samples[i] != tc.want[i] {
						t.Errorf("%s: sample %d = %v, want %v", mode, i, a.Samples[i], tc.want[i])
					}
				}
				if a.SampleRate != tc.s.rate || a.Channels != tc.s.channels || a.BitsPerSample != tc.s.bits || a.Format != tc.wantFmt {
					t.Errorf("%s: got rate %d ch %d bits %d fmt %d", mode, a.SampleRate, a.Channels, a.BitsPerSample, a.Format)
				}
				if a.Truncated != tc.truncated {
					t.Errorf("%s: Truncated = %v, want %v", mode, a.Truncated, tc.truncated)
				}
			}
		})
	}
}

// TestEspeakStdout parses the header espeak-ng writes when streaming to
// stdout: RIFF size 0x7ffff024 and data size 0x7ffff000, 22050 Hz mono.
func TestEspeakStdout(t *testing.T) {
	hdr := []byte{
		'R', 'I', 'F', 'F', 0x24, 0xf0, 0xff, 0x7f, 'W', 'A', 'V', 'E', 'f', 'm', 't', ' ',
		0x10, 0, 0, 0, 1, 0, 1, 0, 0x22, 0x56, 0, 0, 0x44, 0xac, 0, 0,
		2, 0, 0x10, 0, 'd', 'a', 't', 'a', 0x00, 0xf0, 0xff, 0x7f,
	}
	pcm := make([]int16, 22050/2)
	for i := range pcm {
		pcm[i] = int16(10000 * math.Sin(2*math.Pi*440*float64(i)/22050))
	}
	b := append(hdr, u16s(pcm...)...)
	// Through a pipe-like reader, which cannot seek.
	a, err := Decode(io.MultiReader(bytes.NewReader(b)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.SampleRate != 22050 || len(a.Samples) != len(pcm) || !a.Truncated {
		t.Fatalf("rate %d, %d samples, truncated %v", a.SampleRate, len(a.Samples), a.Truncated)
	}
	if got, want := a.Duration(), 500*time.Millisecond; got != want {
		t.Errorf("Duration = %v, want %v", got, want)
	}
	for i, p := range pcm {
		if a.Samples[i] != float32(p)/32768 {
			t.Fatalf("sample %d = %v, want %v", i, a.Samples[i], float32(p)/32768)
		}
	}
}

func TestParseErrors(t *testing.T) {
	valid := spec{tag: 1, channels: 1, rate: 16000, bits: 16, data: u16s(1, 2, 3)}
	with := func(f func(*spec)) []byte {
		s := valid
		f(&s)
		return build(s)
	}
	good := build(valid)
	tests := []struct {
		name string
		in   []byte
		opt  Options
		want ErrorKind
	}{
		{"empty", nil, Options{}, ErrTruncated},
		{"short RIFF", []byte("RIFF\x00\x00"), Options{}, ErrTruncated},
		{"short garbage", []byte("hello"), Options{}, ErrNotWAV},
		{"garbage", []byte(strings.Repeat("x", 100)), Options{}, ErrNotWAV},
		{"RIFF but not WAVE", append([]byte("RIFF\x04\x00\x00\x00AVI "), good[12:]...), Options{}, ErrNotWAV},
		{"RIFX", append([]byte("RIFX"), good[4:]...), Options{}, ErrUnsupportedFormat},
		{"RF64", append([]byte("RF64"), good[4:]...), Options{}, ErrUnsupportedFormat},
		{"header only", good[:12], Options{}, ErrTruncated},
		{"ends inside fmt", good[:30], Options{}, ErrTruncated},
		{"ends before data", good[:36], Options{}, ErrTruncated},
		{"ends inside data chunk header", good[:40], Options{}, ErrTruncated},
		{"ends inside unknown chunk", build(spec{tag: 1, channels: 1, rate: 16000, bits: 16, before: chunk("JUNK", make([]byte, 50))})[:40], Options{}, ErrTruncated},
		{"huge unknown chunk", append(good[:12:12], "JUNK\xff\xff\xff\xff"...), Options{}, ErrTruncated},
		{"fmt too short", with(func(s *spec) { s.fmtSize = 14 }), Options{}, ErrMalformed},
		{"adpcm", with(func(s *spec) { s.tag = 2 }), Options{}, ErrUnsupportedFormat},
		{"mulaw", with(func(s *spec) { s.tag = 7; s.bits = 8 }), Options{}, ErrUnsupportedFormat},
		{"3 channels", with(func(s *spec) { s.channels = 3 }), Options{}, ErrUnsupportedFormat},
		{"0 channels", with(func(s *spec) { s.channels = 0 }), Options{}, ErrUnsupportedFormat},
		{"rate 0", with(func(s *spec) { s.rate = 0 }), Options{}, ErrUnsupportedFormat},
		{"rate 192001", with(func(s *spec) { s.rate = 192001 }), Options{}, ErrUnsupportedFormat},
		{"12-bit pcm", with(func(s *spec) { s.bits = 12; s.blockAlign = 2 }), Options{}, ErrUnsupportedFormat},
		{"16-bit float", with(func(s *spec) { s.tag = 3 }), Options{}, ErrUnsupportedFormat},
		{"block align", with(func(s *spec) { s.blockAlign = 4 }), Options{}, ErrMalformed},
		{"data before fmt", append(append([]byte("RIFF\x00\x00\x00\x00WAVE"), chunk("data", u16s(1))...), good[12:]...), Options{}, ErrMalformed},
		{"two fmt chunks", with(func(s *spec) { s.between = good[12:36] }), Options{}, ErrMalformed},
		{"extensible too short", with(func(s *spec) { s.tag = FormatExtensible; s.sub = 1; s.fmtSize = 18 }), Options{}, ErrMalformed},
		{"extensible bad GUID", func() []byte {
			b := with(func(s *spec) { s.tag = FormatExtensible; s.sub = 1 })
			b[20+26+13] ^= 0xff // last GUID byte
			return b
		}(), Options{}, ErrUnsupportedFormat},
		{"extensible valid bits > container", func() []byte {
			b := with(func(s *spec) { s.tag = FormatExtensible; s.sub = 1 })
			binary.LittleEndian.PutUint16(b[20+18:], 24)
			return b
		}(), Options{}, ErrMalformed},
		{"extensible adpcm", with(func(s *spec) { s.tag = FormatExtensible; s.sub = 2 }), Options{}, ErrUnsupportedFormat},
		{"too large", good, Options{MaxFrames: 2}, ErrTooLarge},
		{"too large streamed", with(func(s *spec) { s.dataSize = 0xFFFFFFFF; s.data = make([]byte, 20000) }), Options{MaxFrames: 9999}, ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Parse(tc.in, tc.opt)
			if err == nil {
				t.Fatalf("got %d samples, want error %v", len(a.Samples), tc.want)
			}
			if !errors.Is(err, tc.want) || KindOf(err) != tc.want {
				t.Fatalf("got %v (kind %q), want kind %q", err, KindOf(err), tc.want)
			}
			if err.Error() == string(tc.want) {
				t.Errorf("error %q carries no detail", err)
			}
		})
	}
}

func TestLimitExact(t *testing.T) {
	b := build(spec{tag: 1, channels: 1, rate: 16000, bits: 16, data: u16s(1, 2, 3)})
	if a, err := Parse(b, Options{MaxFrames: 3}); err != nil || len(a.Samples) != 3 {
		t.Fatalf("MaxFrames equal to the data: %v", err)
	}
}

func TestReaderError(t *testing.T) {
	boom := errors.New("boom")
	b := build(spec{tag: 1, channels: 1, rate: 16000, bits: 16, data: u16s(1, 2, 3)})
	for _, n := range []int{0, 6, 20, 40, 46} {
		_, err := Decode(io.MultiReader(bytes.NewReader(b[:n]), iotest.ErrReader(boom)), Options{})
		if !errors.Is(err, boom) || KindOf(err) != "" {
			t.Errorf("error after %d bytes: got %v (kind %q), want the reader's error", n, err, KindOf(err))
		}
	}
}

func TestEncode16RoundTrip(t *testing.T) {
	in := []float32{0, 0.5, -0.5, 1, -1, 1.5, -2, 0.123456, float32(math.NaN())}
	want := []float32{0, 0.5, -0.5, 32767.0 / 32768, -1, 32767.0 / 32768, -1, 0.123456, 0}
	a, err := Parse(Encode16(in, 16000), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.SampleRate != 16000 || a.Channels != 1 || a.BitsPerSample != 16 || a.Truncated {
		t.Fatalf("header: %+v", a)
	}
	for i := range want {
		if d := math.Abs(float64(a.Samples[i] - want[i])); d > 0.5/32768 {
			t.Errorf("sample %d = %v, want %v", i, a.Samples[i], want[i])
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		n, rate int
		want    time.Duration
	}{
		{0, 16000, 0},
		{16000, 16000, time.Second},
		{22050 + 11025, 22050, 1500 * time.Millisecond},
		{1, 3, 333333333},
		{DefaultMaxFrames, 1, DefaultMaxFrames * time.Second},
	} {
		a := Audio{Samples: make([]float32, tc.n), SampleRate: tc.rate}
		if got := a.Duration(); got != tc.want {
			t.Errorf("%d samples at %d Hz: %v, want %v", tc.n, tc.rate, got, tc.want)
		}
	}
}

// seeds returns one valid file of each supported encoding.
func seeds() [][]byte {
	return [][]byte{
		build(spec{tag: 1, channels: 1, rate: 8000, bits: 8, data: []byte{0, 128, 255}}),
		build(spec{tag: 1, channels: 2, rate: 16000, bits: 16, data: u16s(1, -2, 300, -32768)}),
		build(spec{tag: 1, channels: 1, rate: 48000, bits: 24, data: i24s(5, -5, 1<<22)}),
		build(spec{tag: 1, channels: 2, rate: 96000, bits: 32, data: i32s(5, -5)}),
		build(spec{tag: 3, channels: 1, rate: 22050, bits: 32, data: f32s(0.5, -2)}),
		build(spec{tag: 3, channels: 2, rate: 44100, bits: 64, data: f64s(0.5, -0.25)}),
		build(spec{tag: FormatExtensible, sub: 1, channels: 2, rate: 48000, bits: 24, data: i24s(1, 2)}),
		build(spec{tag: FormatExtensible, sub: 3, channels: 1, rate: 16000, bits: 32, data: f32s(0.1)}),
		build(spec{tag: 1, channels: 1, rate: 22050, bits: 16, dataSize: 0xFFFFFFFF, data: u16s(1, 2, 3),
			before: chunk("JUNK", []byte{1}), between: chunk("LIST", []byte("abc"))}),
		Encode16([]float32{0, 0.25, -0.25}, 16000),
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		const maxFrames = 1 << 16
		a, err := Parse(b, Options{MaxFrames: maxFrames})
		if err != nil {
			if KindOf(err) == "" {
				t.Fatalf("error without a kind: %v", err)
			}
			return
		}
		if a.SampleRate < 1 || a.SampleRate > MaxSampleRate || a.Channels < 1 || a.Channels > MaxChannels {
			t.Fatalf("bad header: %+v", a)
		}
		if a.Format != FormatPCM && a.Format != FormatIEEEFloat {
			t.Fatalf("format %d", a.Format)
		}
		bytesPerFrame := a.Channels * a.BitsPerSample / 8
		if len(a.Samples) > maxFrames || len(a.Samples)*bytesPerFrame > len(b) {
			t.Fatalf("%d frames of %d bytes from %d bytes of input", len(a.Samples), bytesPerFrame, len(b))
		}
		for i, s := range a.Samples {
			if !(s >= -1 && s <= 1) {
				t.Fatalf("sample %d = %v", i, s)
			}
		}
		d := a.Duration()
		want := float64(len(a.Samples)) / float64(a.SampleRate)
		if math.Abs(d.Seconds()-want) > 1e-9 {
			t.Fatalf("duration %v for %d samples at %d Hz", d, len(a.Samples), a.SampleRate)
		}
		// The header probe agrees on the format and counts at least the
		// frames decoded (exactly those, unless the data chunk claims more
		// than the input holds).
		h, err := Probe(b, 0)
		if err != nil {
			t.Fatalf("Probe fails on a file Parse decodes: %v", err)
		}
		if h.SampleRate != a.SampleRate || h.Channels != a.Channels || h.Format != a.Format || h.BitsPerSample != a.BitsPerSample {
			t.Fatalf("Probe header %+v, Parse %+v", h, a)
		}
		if h.Frames < int64(len(a.Samples)) || (!a.Truncated && h.Frames != int64(len(a.Samples))) {
			t.Fatalf("Probe counts %d frames, Parse decoded %d (truncated %v)", h.Frames, len(a.Samples), a.Truncated)
		}
		if _, err := Probe(b, h.Duration()); err != nil {
			t.Fatalf("Probe refuses its own duration: %v", err)
		}
		// Decoding without seeking must agree.
		a2, err := Decode(iotest.HalfReader(bytes.NewReader(b)), Options{MaxFrames: maxFrames})
		if err != nil || len(a2.Samples) != len(a.Samples) || a2.Truncated != a.Truncated {
			t.Fatalf("Decode disagrees with Parse: %v", err)
		}
	})
}
