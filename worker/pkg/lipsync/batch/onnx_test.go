package batch

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference/inferencetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// loadModel loads a generated model on a runtime closed with the test.
func loadModel(tb testing.TB, name string, gen func() ([]byte, error)) *inference.Model {
	tb.Helper()
	return inferencetest.Load(tb, name, gen, inference.RuntimeOptions{LibraryPath: *benchORTLib})
}

// onnxOpen opens ONNX contexts of m with threads intra-op threads on the
// benchmark device (the CPU unless -bench.device says otherwise).
func onnxOpen(m *inference.Model, threads int) func(n int) (lipsync.Model, error) {
	return func(n int) (lipsync.Model, error) {
		return lipsync.NewONNX(m, inference.ContextOptions{Batch: n, IntraOpThreads: threads, Device: benchDevice})
	}
}

// fillFrame gives frame i inputs of its own.
func fillFrame(f *lipsync.Frame, i int) {
	for j := range f.Mel {
		f.Mel[j] = float32(math.Sin(float64(j+i*31)))*2 - 3
	}
	for j := range f.Face {
		f.Face[j] = float32((j*5+i*11)%97) / 96
	}
}

// TestONNX runs sessions through an Executor over real ONNX Runtime
// contexts of the default model: each session's output is what a context
// of its own renders from the same input.
func TestONNX(t *testing.T) {
	m := loadModel(t, "default", onnxgen.DefaultModel)
	e, err := New(Options{Open: onnxOpen(m, 1), MaxBatch: 4, MaxDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	alone, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	const sessions = 5
	got := make([]lipsync.Frame, sessions)
	errs := make([]error, sessions)
	var wg sync.WaitGroup
	for s := range sessions {
		got[s] = newFrame(e.Shape(), 0)
		fillFrame(&got[s], s)
		wg.Go(func() {
			h := e.Session()
			defer h.Close()
			errs[s] = h.Run(context.Background(), got[s:s+1])
		})
	}
	wg.Wait()
	for s := range sessions {
		if errs[s] != nil {
			t.Fatalf("session %d: %v", s, errs[s])
		}
		want := newFrame(alone.Shape(), 0)
		fillFrame(&want, s)
		if err := alone.Run(context.Background(), []lipsync.Frame{want}); err != nil {
			t.Fatal(err)
		}
		for j := range want.Out {
			if d := math.Abs(float64(want.Out[j] - got[s].Out[j])); d > 1e-4 {
				t.Fatalf("session %d value %d: %v batched, %v alone", s, j, got[s].Out[j], want.Out[j])
			}
		}
	}
}
