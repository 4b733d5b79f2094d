package resample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func tone(freq, amp float64, rate, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return x
}

// dftAmp is the amplitude of the component at freq Hz in x (sampled at rate),
// by a direct DFT over x: 2·|Σ x[n]·e^{−2πi·f·n/rate}|/N. With a whole
// number of cycles in x it is exact for a pure tone.
func dftAmp(x []float32, freq float64, rate int) float64 {
	var re, im float64
	for n, v := range x {
		ph := 2 * math.Pi * freq * float64(n) / float64(rate)
		re += float64(v) * math.Cos(ph)
		im -= float64(v) * math.Sin(ph)
	}
	return 2 * math.Hypot(re, im) / float64(len(x))
}

func rms(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s / float64(len(x)))
}

func db(x float64) float64 { return 20 * math.Log10(x) }

// middle returns n samples from the middle of x, away from the edges.
func middle(x []float32, n int) []float32 {
	s := (len(x) - n) / 2
	return x[s : s+n]
}

// checkTone resamples a tone of amplitude 0.5 and checks the output holds it
// at the same frequency and amplitude (±0.5 dB), with everything else at
// least minPurity dB below.
func checkTone(t *testing.T, in, out int, freq, minPurity float64) {
	t.Helper()
	const amp = 0.5
	y, err := Resample(tone(freq, amp, in, in), in, out) // one second
	if err != nil {
		t.Fatal(err)
	}
	// A 0.1 s window at the output rate holds whole cycles of freq.
	seg := middle(y, out/10)
	got := dftAmp(seg, freq, out)
	if d := db(got / amp); math.Abs(d) > 0.5 {
		t.Errorf("%d→%d Hz, %v Hz tone: amplitude %.4f (%+.3f dB), want %v ±0.5 dB", in, out, freq, got, d, amp)
	}
	// Everything that is not the tone: subtract the fitted tone and
	// measure what is left.
	var re, im float64
	for n, v := range seg {
		ph := 2 * math.Pi * freq * float64(n) / float64(out)
		re += float64(v) * math.Cos(ph)
		im += float64(v) * math.Sin(ph)
	}
	re, im = 2*re/float64(len(seg)), 2*im/float64(len(seg))
	res := make([]float32, len(seg))
	for n, v := range seg {
		ph := 2 * math.Pi * freq * float64(n) / float64(out)
		res[n] = v - float32(re*math.Cos(ph)+im*math.Sin(ph))
	}
	purity := db(rms(res) / (amp / math.Sqrt2))
	if purity > -minPurity {
		t.Errorf("%d→%d Hz, %v Hz tone: residual %.1f dB, want ≤ −%v dB", in, out, freq, purity, minPurity)
	}
	// A neighbouring frequency carries nothing (frequency preserved).
	if side := dftAmp(seg, freq+10, out); side > 1e-3*amp {
		t.Errorf("%d→%d Hz, %v Hz tone: %v at %v Hz", in, out, freq, side, freq+10)
	}
}

func TestToneTo16k(t *testing.T) {
	for _, in := range []int{44100, 48000, 22050, 8000, 11025, 24000, 32000, 96000, 16001} {
		t.Run(fmt.Sprint(in), func(t *testing.T) {
			checkTone(t, in, 16000, 1000, 70)
			if in > 16000 {
				// Near the top of the pass band.
				checkTone(t, in, 16000, 7000, 70)
			}
		})
	}
}

func TestUpsample(t *testing.T) {
	checkTone(t, 16000, 48000, 1000, 70)
	checkTone(t, 16000, 44100, 3000, 70)
	checkTone(t, 8000, 16000, 3000, 70)
}

// TestAliasing: a 10 kHz tone is above 16 kHz's Nyquist frequency; without
// the low-pass it would fold to 6 kHz.
func TestAliasing(t *testing.T) {
	for _, in := range []int{48000, 44100, 22050} {
		for _, f := range []float64{8200, 10000, 15000} {
			if f >= float64(in)/2 {
				continue
			}
			y, err := Resample(tone(f, 0.5, in, in), in, 16000)
			if err != nil {
				t.Fatal(err)
			}
			att := db(rms(middle(y, 1600)) / (0.5 / math.Sqrt2))
			if att > -70 {
				t.Errorf("%d→16000: %v Hz tone only %.1f dB down, want ≤ −70 dB (−40 required)", in, f, att)
			}
			t.Logf("%d→16000: %v Hz tone at %.1f dB", in, f, att)
		}
	}
	// Upsampling: the image of a 3 kHz tone at 16k−3k = 13 kHz must be gone.
	y, err := Resample(tone(3000, 0.5, 16000, 16000), 16000, 48000)
	if err != nil {
		t.Fatal(err)
	}
	if img := dftAmp(middle(y, 4800), 13000, 48000); db(img/0.5) > -70 {
		t.Errorf("16k→48k image at 13 kHz: %.1f dB", db(img/0.5))
	}
}

func TestLength(t *testing.T) {
	for _, rates := range [][2]int{{44100, 16000}, {48000, 16000}, {22050, 16000}, {8000, 16000}, {16000, 48000}, {44101, 16000}, {100, 16000}, {384000, 16000}, {16000, 100}} {
		for _, n := range []int{0, 1, 2, 3, 99, 441, 1000, 44100} {
			in, out := rates[0], rates[1]
			if n*out/in > 1e6 {
				continue
			}
			y, err := Resample(make([]float32, n), in, out)
			if err != nil {
				t.Fatal(err)
			}
			exact := float64(n) * float64(out) / float64(in)
			if math.Abs(float64(len(y))-exact) > 1 || len(y) != int(math.Ceil(exact-1e-9)) {
				t.Errorf("%d→%d, %d samples: got %d, want ⌈%v⌉", in, out, n, len(y), exact)
			}
		}
	}
}

func TestIdentity(t *testing.T) {
	x := tone(1234, 0.7, 16000, 999)
	for _, rates := range [][2]int{{16000, 16000}, {8000, 8000}} {
		y, err := Resample(x, rates[0], rates[1])
		if err != nil {
			t.Fatal(err)
		}
		if len(y) != len(x) {
			t.Fatalf("length %d, want %d", len(y), len(x))
		}
		for i := range x {
			if y[i] != x[i] {
				t.Fatalf("sample %d: %v != %v", i, y[i], x[i])
			}
		}
	}
}

// TestDC: a constant passes through unchanged (every phase has unit gain).
func TestDC(t *testing.T) {
	for _, rates := range [][2]int{{44100, 16000}, {16000, 44100}, {44101, 16000}} {
		y, _ := Resample(fill(20000, 0.25), rates[0], rates[1])
		for i, v := range middle(y, len(y)/2) {
			if math.Abs(float64(v)-0.25) > 1e-5 {
				t.Fatalf("%v: sample %d = %v", rates, i, v)
			}
		}
	}
}

func fill(n int, v float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = v
	}
	return x
}

// TestStreaming: feeding a signal in random pieces gives exactly the one-shot
// result, and the Resampler is reusable after Flush.
func TestStreaming(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 30000)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 0.1)
	}
	for _, rates := range [][2]int{{44100, 16000}, {48000, 16000}, {8000, 16000}, {44101, 16000}, {16000, 16000}} {
		in, out := rates[0], rates[1]
		want, err := Resample(x, in, out)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := New(in, out)
		for round := range 2 {
			var got []float32
			for rest := x; len(rest) > 0; {
				n := min(len(rest), rng.IntN(2000))
				got = r.Process(got, rest[:n])
				rest = rest[n:]
			}
			got = r.Flush(got)
			if len(got) != len(want) {
				t.Fatalf("%v round %d: %d samples, want %d", rates, round, len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%v round %d: sample %d = %v, want %v", rates, round, i, got[i], want[i])
				}
			}
		}
	}
}

// TestLookAhead: Process emits an output as soon as LookAhead input samples
// past its position are in.
func TestLookAhead(t *testing.T) {
	r, _ := New(48000, 16000)
	// Output 100 sits at input 300.
	got := r.Process(nil, make([]float32, 300+r.LookAhead()))
	if len(got) != 100 {
		t.Errorf("%d outputs, want 100 (taps %d, look-ahead %d)", len(got), r.Taps(), r.LookAhead())
	}
	got = r.Process(got, make([]float32, 1))
	if len(got) != 101 {
		t.Errorf("%d outputs, want 101 (taps %d, look-ahead %d)", len(got), r.Taps(), r.LookAhead())
	}
}

func TestInvalid(t *testing.T) {
	for _, c := range []struct {
		in, out int
		cfg     Config
	}{
		{0, 16000, Config{}},
		{16000, -1, Config{}},
		{MaxRate + 1, 16000, Config{}},
		{16000 * 257, 16000, Config{}},
		{1, 16000, Config{}}, // the 1 Hz WAV of issue 8
		{62, 16000, Config{}},
		{48000, 16000, Config{HalfLength: 4}},
		{48000, 16000, Config{StopbandDB: 20}},
		{48000, 16000, Config{StopbandDB: math.NaN()}},
	} {
		if _, err := NewWithConfig(c.in, c.out, c.cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("%d→%d %+v: err %v", c.in, c.out, c.cfg, err)
		}
	}
	if _, err := Resample(nil, 0, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Resample: err %v", err)
	}
}

// BenchmarkStream converts one second of audio per op, fed in 20 ms pieces as
// a live stream would be.
func BenchmarkStream(b *testing.B) {
	for _, rates := range [][2]int{{48000, 16000}, {44100, 16000}, {22050, 16000}, {16000, 48000}} {
		in, out := rates[0], rates[1]
		b.Run(fmt.Sprintf("%dto%d", in, out), func(b *testing.B) {
			x := tone(440, 0.5, in, in)
			r, _ := New(in, out)
			piece := in / 50
			dst := make([]float32, 0, out+16)
			b.ReportAllocs()
			for b.Loop() {
				dst = dst[:0]
				for i := 0; i+piece <= len(x); i += piece {
					dst = r.Process(dst, x[i:i+piece])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/audio-s")
		})
	}
}
