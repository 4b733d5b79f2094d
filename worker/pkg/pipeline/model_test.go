package pipeline

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync/lipsynctest"
)

// TestModelShape: New takes any lipsync.Model whose shape it can drive,
// refuses the others, and Close hands the model to ReleaseModel or closes
// it.
func TestModelShape(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name    string
		shape   lipsync.Shape
		release bool
		want    string // "" for no error
	}{
		{"contract", lipsync.Shape{FaceSize: 96, MaxBatch: 1, LookAhead: lipsync.WindowLookAhead}, false, ""},
		{"batched, released", lipsync.Shape{FaceSize: 64, MaxBatch: 8, LookAhead: 0}, true, ""},
		{"look-ahead past the window", lipsync.Shape{FaceSize: 96, MaxBatch: 1, LookAhead: 201 * time.Millisecond}, false, "look-ahead of 0..200ms"},
		{"no batch", lipsync.Shape{FaceSize: 96, LookAhead: 1}, false, "invalid options: lipsync: model shape"},
		{"no face", lipsync.Shape{MaxBatch: 1}, false, "invalid options: lipsync: model shape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &lipsynctest.FakeModel{S: tc.shape}
			var released lipsync.Model
			opt := Options{Avatar: e.pack, Model: m, Sink: discard{}}
			if tc.release {
				opt.ReleaseModel = func(m lipsync.Model) { released = m }
			}
			p, err := New(opt)
			if tc.want != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("New = %v, want ErrConfig with %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.release {
				if released != m || m.Closed() {
					t.Fatalf("released %v, closed %v: want the model released, not closed", released, m.Closed())
				}
			} else if !m.Closed() {
				t.Fatal("Close did not close the model")
			}
		})
	}
}

// TestFakeModel drives a pipeline with a test double of the model: every
// inferred frame is one Run of one frame, and a model that fails ends Run
// with its error.
func TestFakeModel(t *testing.T) {
	e := newEnv(t)
	fake := &lipsynctest.FakeModel{Value: 1}
	h := e.start(t, func(o *Options) {
		_ = o.Model.Close() // the harness's ONNX context, replaced
		o.Model = fake
		o.ProcessingMargin = time.Millisecond // no warm-up runs to count
	})
	loud := tone16k(400*time.Millisecond, 0.3)
	if err := h.p.PushPCM(loud); err != nil {
		t.Fatal(err)
	}
	h.tick(t, h.d+10)
	st := h.p.Status()
	runs, frames := fake.Runs()
	if st.Inferred == 0 || uint64(runs) != st.Inferred || frames != runs {
		t.Fatalf("inferred %d frames, the model ran %d times for %d frames: want equal and above 0", st.Inferred, runs, frames)
	}

	boom := errors.New("boom")
	fake.Fail(boom)
	if err := h.p.PushPCM(loud); err != nil {
		t.Fatal(err)
	}
	for range 2 * h.d {
		select {
		case h.clock.Ticks() <- time.Time{}:
		case err := <-h.done:
			if !errors.Is(err, boom) || !strings.Contains(err.Error(), "pipeline: frame") {
				t.Fatalf("Run = %v, want the model's error", err)
			}
			h.cancel = nil // Run has returned
			return
		case <-time.After(10 * time.Second):
			t.Fatal("tick not taken")
		}
	}
	t.Fatal("a failing model did not end Run")
}
