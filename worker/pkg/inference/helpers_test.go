package inference

import (
	"math"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m))
}

// newRuntime opens the ONNX Runtime set up by scripts/setup.sh (found from
// the working directory, the package's folder) and closes it after t.
func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	rt, err := NewRuntime(RuntimeOptions{})
	if err != nil {
		t.Fatalf("NewRuntime: %v (run scripts/setup.sh first)", err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Runtime.Close: %v", err)
		}
	})
	return rt
}

// loadDefault loads onnxgen's default model.
func loadDefault(t testing.TB, rt *Runtime) *Model {
	t.Helper()
	data, err := onnxgen.DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	m, err := rt.LoadModelData("default", data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newContext(t testing.TB, m *Model, opts ContextOptions) *Context {
	t.Helper()
	c, err := m.NewContext(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Context.Close: %v", err)
		}
	})
	return c
}

// Mel levels (the contract's −4..4 scale).
const (
	silence = -4
	loud    = 1.0 // a loud vowel in the voice bands
	medium  = -1.2
)

// voiceMel is a [1,80,16] window: the bands 2..55 (voice) at level, the
// rest silent.
func voiceMel(level float32) []float32 {
	mel := make([]float32, MelBands*MelFrames)
	for b := range MelBands {
		for t := range MelFrames {
			v := float32(silence)
			if b >= 2 && b <= 55 {
				v = level
			}
			mel[b*MelFrames+t] = v
		}
	}
	return mel
}

// syntheticFace is a [6,S,S] stack whose reference half is a face-like
// texture: skin with fine texture, two eyes, red lips around the lip line
// (0.74·S) with a dark line between them. The masked half is the
// reference with its lower half black, as the worker sends it.
func syntheticFace(s int) []float32 {
	f := make([]float32, 6*s*s)
	for y := range s {
		for x := range s {
			fx, fy := (float64(x)+0.5)/float64(s), (float64(y)+0.5)/float64(s)
			tex := 0.05 * math.Sin(fx*53) * math.Cos(fy*41)
			rgb := [3]float64{0.85 + tex, 0.65 + tex, 0.55 + tex}
			for _, ex := range []float64{0.32, 0.68} {
				if math.Hypot(fx-ex, (fy-0.42)*1.6) < 0.05 {
					rgb = [3]float64{0.15, 0.1, 0.1}
				}
			}
			if lips := math.Abs(fx-0.5) < 0.19 && math.Abs(fy-0.74) < 0.045; lips {
				rgb = [3]float64{0.75, 0.3, 0.3}
				if math.Abs(fy-0.74) < 0.008 {
					rgb = [3]float64{0.3, 0.1, 0.1}
				}
			}
			for c := range 3 {
				v := float32(rgb[c])
				f[(3+c)*s*s+y*s+x] = v
				if fy < 0.5 {
					f[c*s*s+y*s+x] = v
				}
			}
		}
	}
	return f
}

// ref is the reference half of a face stack.
func ref(face []float32, s int) []float32 { return face[3*s*s : 6*s*s] }

// regionDiff is the mean absolute difference of two [3,S,S] images over
// rows y0..y1-1 and columns x0..x1-1 (fractions of S).
func regionDiff(a, b []float32, s int, x0, x1, y0, y1 float64) float64 {
	var sum float64
	var n int
	for c := range 3 {
		for y := int(y0 * float64(s)); y < int(y1*float64(s)); y++ {
			for x := int(x0 * float64(s)); x < int(x1*float64(s)); x++ {
				i := c*s*s + y*s + x
				sum += math.Abs(float64(a[i] - b[i]))
				n++
			}
		}
	}
	return sum / float64(n)
}

// maxDiff is the largest absolute difference over rows y0..y1-1.
func maxDiff(a, b []float32, s int, y0, y1 float64) float64 {
	var m float64
	for c := range 3 {
		for y := int(y0 * float64(s)); y < int(y1*float64(s)); y++ {
			for x := range s {
				i := c*s*s + y*s + x
				m = math.Max(m, math.Abs(float64(a[i]-b[i])))
			}
		}
	}
	return m
}
