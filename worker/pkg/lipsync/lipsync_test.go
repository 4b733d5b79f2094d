package lipsync_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference/inferencetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

func frame(s lipsync.Shape) lipsync.Frame {
	return lipsync.Frame{Mel: make([]float32, lipsync.MelLen), Face: make([]float32, s.FaceLen()), Out: make([]float32, s.OutLen())}
}

func TestCheck(t *testing.T) {
	s := lipsync.Shape{FaceSize: 8, MaxBatch: 2}
	good := frame(s)
	short := frame(s)
	short.Face = short.Face[1:]
	noOut := frame(s)
	noOut.Out = nil
	for _, tc := range []struct {
		name  string
		batch []lipsync.Frame
		want  string // "" for no error
	}{
		{"one", []lipsync.Frame{good}, ""},
		{"full", []lipsync.Frame{good, good}, ""},
		{"empty", nil, "batch of 0 frames; want 1..2"},
		{"too many", []lipsync.Frame{good, good, good}, "batch of 3 frames"},
		{"short face", []lipsync.Frame{good, short}, "frame 1 of 2: 1280/383/192"},
		{"no out", []lipsync.Frame{noOut}, "frame 0 of 1: 1280/384/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := lipsync.Check(s, tc.batch)
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
		})
	}
}

// inputs fills frame i with inputs of its own (so frames differ).
func inputs(f *lipsync.Frame, i int) {
	for j := range f.Mel {
		f.Mel[j] = float32(math.Sin(float64(j*(i+1)))) - 2
	}
	for j := range f.Face {
		f.Face[j] = float32((j*7+i*13)%101) / 100
	}
}

// TestONNXBatch: a batch of B frames (full or partial) renders every frame
// as a batch of one does, and frames are not mixed up.
func TestONNXBatch(t *testing.T) {
	m := inferencetest.Default(t)
	one, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	four, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer four.Close()
	if got := four.Shape(); got.MaxBatch != 4 || got.FaceSize != 96 || got.LookAhead != onnxgen.DefaultLookAheadMS*time.Millisecond {
		t.Fatalf("Shape = %+v", got)
	}
	ctx := context.Background()
	for _, n := range []int{1, 3, 4} {
		batch := make([]lipsync.Frame, n)
		for i := range batch {
			batch[i] = frame(four.Shape())
			inputs(&batch[i], i)
		}
		if err := four.Run(ctx, batch); err != nil {
			t.Fatalf("batch of %d: %v", n, err)
		}
		for i := range batch {
			want := frame(one.Shape())
			inputs(&want, i)
			if err := one.Run(ctx, []lipsync.Frame{want}); err != nil {
				t.Fatal(err)
			}
			for j := range want.Out {
				if d := math.Abs(float64(want.Out[j] - batch[i].Out[j])); d > 1e-4 {
					t.Fatalf("batch of %d, frame %d, value %d: %v, alone %v", n, i, j, batch[i].Out[j], want.Out[j])
				}
			}
		}
	}
}

func TestONNXErrors(t *testing.T) {
	m := inferencetest.Default(t)
	o, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := frame(o.Shape())
	bad := frame(o.Shape())
	bad.Mel = bad.Mel[:10]
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		batch []lipsync.Frame
		is    error
		want  string
	}{
		{"two frames on batch 1", context.Background(), []lipsync.Frame{f, f}, nil, "batch of 2 frames; want 1..1"},
		{"short mel", context.Background(), []lipsync.Frame{bad}, nil, "10/55296/27648"},
		{"cancelled", cancelled, []lipsync.Frame{f}, context.Canceled, "run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := o.Run(tc.ctx, tc.batch)
			if err == nil || !strings.Contains(err.Error(), tc.want) || tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("Run = %v, want %q", err, tc.want)
			}
		})
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := o.Run(context.Background(), []lipsync.Frame{f}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Run after Close = %v, want a closed error", err)
	}
}
