package melspec

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// Reference values below were computed from the Slaney formulas with
// Python's math module (no librosa): f_sp = 200/3, 15 mel at 1 kHz,
// logstep = ln(6.4)/27.
func TestMelScale(t *testing.T) {
	for _, c := range []struct{ hz, mel float64 }{
		{0, 0},
		{55, 0.825},
		{500, 7.5},
		{1000, 15},
		{4000, 35.163760314616646},
		{7600, 44.499575478237674},
		{2804.644130738921, 30},
		{6400, 42},
	} {
		if got := HzToMel(c.hz); !near(got, c.mel, 1e-9) {
			t.Errorf("HzToMel(%v) = %v, want %v", c.hz, got, c.mel)
		}
		if got := MelToHz(c.mel); !near(got, c.hz, 1e-7) {
			t.Errorf("MelToHz(%v) = %v, want %v", c.mel, got, c.hz)
		}
	}
}

func TestBandEdges(t *testing.T) {
	e := melEdges()
	for _, c := range []struct {
		i  int
		hz float64
	}{
		{0, 55}, {1, 90.94615265698575}, {2, 126.89230531397148}, {20, 773.9230531397149},
		{40, 1662.3972498320234}, {41, 1725.1795211922386}, {42, 1790.3328344905617},
		{79, 7056.910790734861}, {80, 7323.422834275308}, {81, 7600},
	} {
		if !near(e[c.i], c.hz, 1e-6) {
			t.Errorf("edge %d = %v Hz, want %v", c.i, e[c.i], c.hz)
		}
	}
	for i := 1; i < len(e); i++ {
		if e[i] <= e[i-1] {
			t.Fatalf("edges not increasing at %d", i)
		}
	}
}

// dense returns the filterbank as an 80×401 matrix.
func (e *Extractor) dense() [Bands][Bins]float64 {
	var m [Bands][Bins]float64
	for b := range Bands {
		for i, w := range e.weights[e.off[b]:e.off[b+1]] {
			m[b][e.lo[b]+i] = w
		}
	}
	return m
}

// triangle is band b's weight at f Hz written from the definition: rising
// from edge b to edge b+1, falling to edge b+2, height 2/(f_{b+2} − f_b).
func triangle(edges [Bands + 2]float64, b int, f float64) float64 {
	l, c, r := edges[b], edges[b+1], edges[b+2]
	h := 2 / (r - l)
	switch {
	case f <= l || f >= r:
		return 0
	case f <= c:
		return h * (f - l) / (c - l)
	default:
		return h * (r - f) / (r - c)
	}
}

func TestFilterbank(t *testing.T) {
	e := New()
	fb := e.dense()
	edges := melEdges()
	if e.lo[0] != 3 || e.off[1]-e.off[0] != 4 {
		t.Errorf("band 0 covers bins %d..+%d, want 3..+4 (60..120 Hz)", e.lo[0], e.off[1]-e.off[0])
	}
	if e.lo[79] != 353 || e.off[80]-e.off[79] != 27 {
		t.Errorf("band 79 covers bins %d..+%d, want 353..+27 (7060..7580 Hz)", e.lo[79], e.off[80]-e.off[79])
	}
	for b := range Bands {
		l, c, r := edges[b], edges[b+1], edges[b+2]
		peakH := 2 / (r - l)
		best, bestK := 0.0, -1
		var area float64
		for k := range Bins {
			f := float64(k) * 20
			w := fb[b][k]
			if want := triangle(edges, b, f); !near(w, want, 1e-12) {
				t.Fatalf("band %d bin %d: %v, want %v", b, k, w, want)
			}
			if w > 0 && (f <= l || f >= r) {
				t.Fatalf("band %d has weight at %v Hz, outside %v..%v", b, f, l, r)
			}
			if w > best {
				best, bestK = w, k
			}
			area += w * 20
		}
		if best > peakH*(1+1e-12) {
			t.Errorf("band %d peak %v above the triangle's %v", b, best, peakH)
		}
		if math.Abs(float64(bestK)*20-c) > 20 {
			t.Errorf("band %d peaks at bin %d (%v Hz), centre %v Hz", b, bestK, bestK*20, c)
		}
		// Slaney normalisation: unit area in Hz. The 20 Hz bins sample
		// the narrow low bands coarsely, so check where they are 8+ bins
		// wide.
		if r-l >= 160 && !near(area, 1, 0.03) {
			t.Errorf("band %d (%.0f..%.0f Hz): area %v, want 1", b, l, r, area)
		}
	}
}

func TestFrameCount(t *testing.T) {
	e := New()
	for _, n := range []int{0, 1, 2, 199, 200, 201, 399, 400, 401, 799, 800, 1000, 16000, 16001} {
		want := 0
		if n > 0 {
			want = 1 + n/200
		}
		if got := FrameCount(n); got != want {
			t.Errorf("FrameCount(%d) = %d, want %d", n, got, want)
		}
		if got := len(e.Compute(make([]float32, n))); got != want {
			t.Errorf("len(Compute(%d samples)) = %d, want %d", n, got, want)
		}
	}
}

func TestSilence(t *testing.T) {
	// log10(1e-5)·1.6 + 2.4 = −5.6, clipped to −4.
	if got := level(0); got != -4 {
		t.Fatalf("level(0) = %v", got)
	}
	for _, fr := range New().Compute(make([]float32, 5000)) {
		for b, v := range fr {
			if v != Silence {
				t.Fatalf("band %d = %v, want %v", b, v, Silence)
			}
		}
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		m    float64
		want float32
	}{{0, -4}, {1e-5, -4}, {1e-4, -4}, {1, 2.4}, {10, 4}, {1e6, 4}, {0.1, 0.8}} {
		if got := level(c.m); math.Abs(float64(got-c.want)) > 1e-6 {
			t.Errorf("level(%v) = %v, want %v", c.m, got, c.want)
		}
	}
}

// TestTone: a 1 kHz tone (exactly bin 50: 50 cycles per 800 samples) lands
// in the band centred nearest 1 kHz and its two neighbours, at the values
// the formula predicts; every other band stays at the floor.
func TestTone(t *testing.T) {
	const amp = 0.5
	x := make([]float32, SampleRate)
	for n := range x {
		x[n] = float32(amp * math.Sin(2*math.Pi*1000*float64(n)/SampleRate))
	}
	mel := New().Compute(x)
	edges := melEdges()
	nearest := 0
	for b := range Bands {
		if math.Abs(edges[b+1]-1000) < math.Abs(edges[nearest+1]-1000) {
			nearest = b
		}
	}
	if nearest != 25 {
		t.Fatalf("band nearest 1 kHz: %d, want 25 (989.6 Hz)", nearest)
	}
	// With the periodic Hann window the tone's spectrum is exactly bins
	// 49, 50, 51 with magnitudes A·N/8, A·N/4, A·N/8, times the
	// pre-emphasis gain |1 − 0.97·e^{−iω}| at 1 kHz.
	w := 2 * math.Pi * 1000 / SampleRate
	g := math.Hypot(1-0.97*math.Cos(w), 0.97*math.Sin(w))
	mags := map[float64]float64{980: amp * 800 / 8 * g, 1000: amp * 800 / 4 * g, 1020: amp * 800 / 8 * g}
	var want [Bands]float64
	for b := range Bands {
		var m float64
		for f, a := range mags {
			m += triangle(edges, b, f) * a
		}
		want[b] = math.Min(4, math.Max(-4, 1.6*math.Log10(math.Max(1e-5, m))+2.4))
	}
	for k := 2; k < len(mel)-2; k++ { // frames clear of the edges
		fr := mel[k]
		arg := 0
		for b := range Bands {
			if fr[b] > fr[arg] {
				arg = b
			}
			if !near(float64(fr[b]), want[b], 1e-4) {
				t.Fatalf("frame %d band %d = %v, want %v", k, b, fr[b], want[b])
			}
			if (b < 24 || b > 26) && fr[b] != Silence {
				t.Fatalf("frame %d band %d = %v, want the floor", k, b, fr[b])
			}
		}
		if arg != nearest {
			t.Fatalf("frame %d peaks in band %d, want %d", k, arg, nearest)
		}
	}
	t.Logf("bands 24..26: %v %v %v", mel[10][24], mel[10][25], mel[10][26])
}

// reference computes the spectrogram straight from the definitions: lfilter
// pre-emphasis, numpy-style iterative reflect padding, a periodic Hann
// window, an O(N²) DFT, the triangle filters, and Wav2Lip's _amp_to_db and
// _normalize as written (not the collapsed formula).
func reference(x []float32) [][Bands]float64 {
	n := len(x)
	y := make([]float64, n)
	for i := range x {
		y[i] = float64(x[i])
		if i > 0 {
			y[i] -= 0.97 * float64(x[i-1])
		}
	}
	// numpy.pad(y, 400, mode="reflect"): mirror chunks of at most n−1
	// samples until the padding is done; a single sample is repeated.
	p := append([]float64(nil), y...)
	left, right := 400, 400
	for left > 0 || right > 0 {
		if n == 1 {
			p = append([]float64{p[0]}, p...)
			p = append(p, p[len(p)-1])
			left--
			right--
			continue
		}
		if left > 0 {
			c := min(left, len(p)-1)
			pre := make([]float64, c)
			for j := range c {
				pre[j] = p[c-j]
			}
			p = append(pre, p...)
			left -= c
		}
		if right > 0 {
			c := min(right, len(p)-1)
			for j := range c {
				p = append(p, p[len(p)-2-2*j])
			}
			right -= c
		}
	}
	var cosT, sinT [800]float64
	for i := range cosT {
		cosT[i] = math.Cos(2 * math.Pi * float64(i) / 800)
		sinT[i] = math.Sin(2 * math.Pi * float64(i) / 800)
	}
	edges := melEdges()
	frames := 1 + (len(p)-800)/200
	out := make([][Bands]float64, frames)
	var seg [800]float64
	var mag [401]float64
	for k := range frames {
		for j := range seg {
			seg[j] = p[200*k+j] * (0.5 - 0.5*math.Cos(2*math.Pi*float64(j)/800))
		}
		for f := range mag {
			var re, im float64
			for j, v := range seg {
				a := (f * j) % 800
				re += v * cosT[a]
				im -= v * sinT[a]
			}
			mag[f] = math.Hypot(re, im)
		}
		for b := range Bands {
			var m float64
			for f, v := range mag {
				m += triangle(edges, b, float64(f)*20) * v
			}
			minLevel := math.Exp(-100.0 / 20 * math.Log(10))
			s := 20*math.Log10(math.Max(minLevel, m)) - 20 // _amp_to_db − ref_level_db
			v := (2*4)*((s-(-100))/100) - 4                // _normalize
			out[k][b] = math.Min(4, math.Max(-4, v))
		}
	}
	return out
}

func noise(seed uint64, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n)
	for i := range x {
		// Speech-like level with a tone on top, so bands span the range.
		x[i] = float32(0.1*rng.NormFloat64() + 0.3*math.Sin(float64(i)*0.37))
	}
	return x
}

func TestAgainstReference(t *testing.T) {
	e := New()
	for _, n := range []int{1, 2, 50, 399, 400, 401, 600, 799, 1000, 1234, 3001} {
		x := noise(uint64(n), n)
		got := e.Compute(x)
		want := reference(x)
		if len(got) != len(want) {
			t.Fatalf("n=%d: %d frames, reference %d", n, len(got), len(want))
		}
		var worst float64
		for k := range want {
			for b := range Bands {
				d := math.Abs(float64(got[k][b]) - want[k][b])
				worst = max(worst, d)
				if d > 1e-4 {
					t.Fatalf("n=%d frame %d band %d: %v, reference %v", n, k, b, got[k][b], want[k][b])
				}
			}
		}
		t.Logf("n=%d: %d frames, max |Δ| %.2g", n, len(got), worst)
	}
}

// TestStreaming: any split of the audio gives Compute's frames bit for bit,
// each frame is emitted as soon as its last sample arrives, and a stream
// can follow another.
func TestStreaming(t *testing.T) {
	e := New()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 399, 401, 999, 1000, 1001, 20000} {
		x := noise(uint64(n)+100, n)
		want := e.Compute(x)
		for round := range 3 {
			var got []Frame
			fed := 0
			for fed < n {
				c := min(n-fed, rng.IntN(700))
				if round == 2 {
					c = 1
				}
				got = e.Append(got, x[fed:fed+c])
				fed += c
				wantNow := 0
				if fed >= 401 {
					wantNow = (fed-400)/200 + 1
				}
				if len(got) != wantNow {
					t.Fatalf("n=%d: %d frames after %d samples, want %d", n, len(got), fed, wantNow)
				}
			}
			// Compute in the middle of a stream leaves it alone.
			_ = e.Compute(x[:n/2])
			got = e.Flush(got)
			if len(got) != len(want) {
				t.Fatalf("n=%d round %d: %d frames, want %d", n, round, len(got), len(want))
			}
			for k := range want {
				if got[k] != want[k] {
					t.Fatalf("n=%d round %d: frame %d differs", n, round, k)
				}
			}
		}
	}
}

func TestAppendNoAlloc(t *testing.T) {
	e := New()
	x := noise(9, 640)
	dst := make([]Frame, 0, 8)
	for range 10 { // warm up the buffers
		dst = e.Append(dst[:0], x)
	}
	if a := testing.AllocsPerRun(100, func() { dst = e.Append(dst[:0], x) }); a != 0 {
		t.Errorf("Append: %v allocs per call", a)
	}
}

func TestWindowStart(t *testing.T) {
	want := []int{0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32}
	for i, w := range want {
		if got := WindowStart(i); got != w {
			t.Errorf("WindowStart(%d) = %d, want %d", i, got, w)
		}
	}
	// int(i·80/25) in float64, as Wav2Lip computes it, for a long stretch.
	for i := range 1_000_000 {
		if got, w := WindowStart(i), int(float64(i)*(80.0/25)); got != w {
			t.Fatalf("WindowStart(%d) = %d, float gives %d", i, got, w)
		}
	}
}

func TestWindow(t *testing.T) {
	mel := make([]Frame, 40)
	for k := range mel {
		for b := range Bands {
			mel[k][b] = float32(k) + float32(b)/100
		}
	}
	var w [WindowSize]float32
	for _, i := range []int{0, 1, 5, 7, 9, 12, -1} {
		Window(&w, mel, i)
		s := WindowStart(i)
		for b := range Bands {
			for tt := range WindowFrames {
				want := Silence
				if k := s + tt; k >= 0 && k < len(mel) {
					want = mel[k][b]
				}
				if got := w[b*WindowFrames+tt]; got != want {
					t.Fatalf("video frame %d: [%d][%d] = %v, want %v", i, b, tt, got, want)
				}
			}
		}
	}
	// Video frame 7 starts at mel frame 22: 16 frames would run to 37,
	// all present. Frame 9 starts at 28: 28..39 real, then 4 of silence.
	Window(&w, mel, 9)
	if w[0*16+11] != 39 || w[0*16+12] != Silence || w[79*16+0] != mel[28][79] {
		t.Errorf("frame 9 window: %v %v %v", w[11], w[12], w[79*16])
	}
}

// BenchmarkStream40ms feeds one video frame's worth of audio (40 ms, 640
// samples, 3.2 mel frames) per op in streaming mode.
func BenchmarkStream40ms(b *testing.B) {
	e := New()
	x := noise(5, 640*25)
	dst := make([]Frame, 0, 8)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst = e.Append(dst[:0], x[i:i+640])
		i = (i + 640) % len(x)
	}
}

// BenchmarkCompute10s is the one-shot cost for 10 s of audio.
func BenchmarkCompute10s(b *testing.B) {
	e := New()
	x := noise(6, 10*SampleRate)
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Compute(x)
	}
}

func ExampleWindow() {
	e := New()
	pcm := make([]float32, SampleRate) // one second of silence
	mel := e.Compute(pcm)
	var w [WindowSize]float32
	Window(&w, mel, 0)
	fmt.Println(len(mel), WindowStart(24), w[0])
	// Output: 81 76 -4
}

// A frame whose window is all digital silence is taken without the FFT;
// the result is bit for bit what the FFT gives, for streams that go from
// sound to silence and back, and those frames are the Silence frame.
func TestFullSilenceShortcut(t *testing.T) {
	fast, slow := New(), New()
	slow.fullSilence = false
	for _, tc := range []struct {
		name   string
		pieces []int // lengths: sound, silence, sound, ...
	}{
		{"silence only", []int{0, 8000}},
		{"sound, silence, sound", []int{3000, 6400, 2000}},
		{"short gaps", []int{1000, 700, 1000, 800, 1000, 900}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var x []float32
			for i, n := range tc.pieces {
				if i%2 == 0 {
					x = append(x, noise(uint64(i+7), n)...)
				} else {
					x = append(x, make([]float32, n)...)
				}
			}
			var a, b []Frame
			for k := 0; k < len(x); k += 640 {
				a = fast.Append(a, x[k:min(k+640, len(x))])
				b = slow.Append(b, x[k:min(k+640, len(x))])
			}
			a, b = fast.Flush(a), slow.Flush(b)
			if len(a) != len(b) {
				t.Fatalf("%d frames, want %d", len(a), len(b))
			}
			silent := 0
			for k := range a {
				if a[k] != b[k] {
					t.Fatalf("frame %d differs from the FFT's", k)
				}
				if a[k][0] == Silence && a[k][Bands-1] == Silence {
					silent++
				}
			}
			if silent == 0 {
				t.Error("no silent frame: the shortcut was not exercised")
			}
		})
	}
}
