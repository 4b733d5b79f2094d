package inference

import (
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

func TestSessionRunsAnyModel(t *testing.T) {
	rt := newRuntime(t)
	m := loadDefault(t, rt)
	data, err := onnxgen.DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	const s = DefaultSize
	in := []TensorSpec{
		{Name: m.Mel().Name, Shape: []int64{1, 1, MelBands, MelFrames}},
		{Name: m.Face().Name, Shape: []int64{1, FaceChannels, s, s}},
	}
	out := []TensorSpec{{Name: m.Output().Name, Shape: []int64{1, OutChannels, s, s}}}
	sess, err := rt.NewSession("default", data, in, out, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	face := make([]float32, FaceChannels*s*s)
	for i := range face {
		face[i] = 0.5
	}
	res := make([]float32, OutChannels*s*s)
	if err := sess.Run([][]float32{voiceMel(silence), face}, [][]float32{res}); err != nil {
		t.Fatal(err)
	}
	var sum float32
	for _, v := range res {
		sum += v
	}
	if sum == 0 {
		t.Error("output all zero")
	}
	if err := sess.Run([][]float32{voiceMel(silence)}, [][]float32{res}); err == nil || !strings.Contains(err.Error(), "inputs given") {
		t.Errorf("Run with a missing input: %v", err)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sess.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := sess.Run(nil, nil); err == nil {
		t.Error("Run after Close succeeded")
	}
	// ONNX Runtime checks names when the session runs, not when it opens.
	bad, err := rt.NewSession("bad", data, []TensorSpec{{Name: "nope", Shape: []int64{1}}}, out, SessionOptions{})
	if err == nil {
		if err := bad.Run([][]float32{{0}}, [][]float32{res}); err == nil {
			t.Error("a session with an unknown input name ran")
		}
		if err := bad.Close(); err != nil {
			t.Error(err)
		}
	}
}
