package inference

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

func TestDefaultModelMatchesByShape(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	if got := m.Mel(); got.Name != onnxgen.MelInput || shapeString(got.Shape) != "[?,1,80,16]" {
		t.Errorf("Mel() = %v", got)
	}
	if got := m.Face(); got.Name != onnxgen.FaceInput || shapeString(got.Shape) != "[?,6,96,96]" {
		t.Errorf("Face() = %v", got)
	}
	if got := m.Output(); got.Name != onnxgen.FaceOutput || shapeString(got.Shape) != "[?,3,96,96]" {
		t.Errorf("Output() = %v", got)
	}
	if m.Batch() != 0 || m.Size() != 96 {
		t.Errorf("Batch, Size = %d, %d; want 0 (dynamic), 96", m.Batch(), m.Size())
	}
}

// run infers one frame with the default model.
func runOne(t *testing.T, c *Context, mel, face []float32) []float32 {
	t.Helper()
	out := make([]float32, c.OutLen())
	if err := c.Run(mel, face, out); err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if !(v >= 0 && v <= 1) {
			t.Fatalf("out[%d] = %v; want 0..1", i, v)
		}
	}
	return out
}

func TestDefaultModelMovesMouthWithSpeech(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	c := newContext(t, m, ContextOptions{})
	s := c.Size()
	face := syntheticFace(s)
	reference := ref(face, s)

	quiet := runOne(t, c, voiceMel(silence), face)
	mid := runOne(t, c, voiceMel(medium), face)
	speech := runOne(t, c, voiceMel(loud), face)

	// Silence: the reference, mouth closed, everywhere, exactly (the
	// "change" paste then leaves the photo pixel for pixel).
	if d := maxDiff(quiet, reference, s, 0, 1); d != 0 {
		t.Errorf("silence: output differs from the reference by up to %g; want exactly 0", d)
	}
	// Speech: the mouth region changes, more when louder; the upper half
	// never does.
	mouth := func(out []float32) float64 { return regionDiff(out, reference, s, 0.25, 0.75, 0.6, 0.95) }
	dq, dm, dl := mouth(quiet), mouth(mid), mouth(speech)
	t.Logf("mouth region mean |out − ref|: silence %.4f, medium %.4f, loud %.4f", dq, dm, dl)
	if dl < 0.04 {
		t.Errorf("loud speech changes the mouth region by %.4f on average; want ≥ 0.04", dl)
	}
	if !(dq < dm && dm < dl) {
		t.Errorf("mouth change not increasing with loudness: %.4f, %.4f, %.4f", dq, dm, dl)
	}
	for _, out := range [][]float32{mid, speech} {
		if d := maxDiff(out, reference, s, 0, 0.5); d != 0 {
			t.Errorf("speech changes the upper half by up to %g; want exactly 0", d)
		}
	}
	// The opening is the mouth's dark red inside: just below the lip line
	// the output is dark, and redder than it is green.
	lipRow := int(onnxgen.LipRow*float64(s)) + 3
	centre := lipRow*s + s/2
	if r, g := speech[centre], speech[s*s+centre]; r > 0.3 || g > 0.12 || r < 1.5*g {
		t.Errorf("opening's colour: red %.3f, green %.3f; want dark red (red ≤ 0.3, green ≤ 0.12, red ≥ 1.5 green)", r, g)
	}
}

func TestDefaultModelBatchItemsIndependent(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	c := newContext(t, m, ContextOptions{Batch: 4})
	s := c.Size()
	one := syntheticFace(s)
	levels := []float32{silence, loud, medium, silence}
	var mel, face []float32
	for _, l := range levels {
		mel = append(mel, voiceMel(l)...)
		face = append(face, one...)
	}
	out := make([]float32, c.OutLen())
	if err := c.Run(mel, face, out); err != nil {
		t.Fatal(err)
	}
	single := newContext(t, m, ContextOptions{})
	for i, l := range levels {
		want := runOne(t, single, voiceMel(l), one)
		got := out[i*3*s*s : (i+1)*3*s*s]
		if d := maxDiff(got, want, s, 0, 1); d > 1e-5 {
			t.Errorf("batch item %d (level %v) differs from a batch-1 run by %.6f", i, l, d)
		}
	}
}

func TestBenchmarkModelRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and loads a 145 MB model")
	}
	data, err := onnxgen.BenchmarkModel()
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t)
	m, err := rt.LoadModelData("benchmark", data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != 96 || m.Batch() != 0 {
		t.Errorf("Size, Batch = %d, %d; want 96, 0", m.Size(), m.Batch())
	}
	c := newContext(t, m, ContextOptions{Batch: 1})
	if c.OutLen() != 1*3*96*96 {
		t.Fatalf("OutLen = %d; want [1,3,96,96]", c.OutLen())
	}
	out := runOne(t, c, voiceMel(loud), syntheticFace(96))
	var lo, hi float32 = 1, 0
	for _, v := range out {
		lo, hi = min(lo, v), max(hi, v)
	}
	t.Logf("benchmark model output range %.4f..%.4f", lo, hi)
}

func TestLoadModelFromFile(t *testing.T) {
	data, err := onnxgen.DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "default.onnx")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := newRuntime(t).LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != path {
		t.Errorf("Name() = %q", m.Name())
	}
	c := newContext(t, m, ContextOptions{})
	face := syntheticFace(c.Size())
	if d := maxDiff(runOne(t, c, voiceMel(silence), face), ref(face, c.Size()), c.Size(), 0, 1); d > 0.01 {
		t.Errorf("silence: differs from the reference by %.4f", d)
	}
}
