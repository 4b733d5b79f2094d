package mediaruntime

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync/lipsynctest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// TestOpenModel plugs test doubles of the lip-sync model in through
// Config.OpenModel: the pool prewarms and reuses them, a model that fails
// ends only the session that ran it, a model that cannot be made fails the
// start, and Close closes every model.
func TestOpenModel(t *testing.T) {
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	var mu sync.Mutex
	var fakes []*lipsynctest.FakeModel
	var refuse bool
	clocks := map[string]*pipeline.ManualClock{}
	r, err := New(Config{
		Devices: []*fleetv1.GPU{{Index: 3, Slots: 3}},
		OpenModel: func(gpu uint32) (lipsync.Model, error) {
			mu.Lock()
			defer mu.Unlock()
			if gpu != 3 {
				t.Errorf("OpenModel(%d), want GPU 3", gpu)
			}
			if refuse {
				return nil, errors.New("no memory left")
			}
			f := &lipsynctest.FakeModel{}
			f.Fail(boom)
			fakes = append(fakes, f)
			return f, nil
		},
		Prewarm: 1,
		Avatar:  func(string) (*avatar.Pack, error) { return pack, nil },
		Media:   func(*fleetv1.Session, MediaHooks) (Media, error) { return &sink{}, nil },
		Clock: func(s *fleetv1.Session) pipeline.Clock {
			mu.Lock()
			defer mu.Unlock()
			clocks[s.GetId()] = pipeline.NewManualClock()
			return clocks[s.GetId()]
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(fakes) != 1 {
		t.Fatalf("%d models made by New, want the 1 prewarmed", len(fakes))
	}
	ctx := context.Background()
	for i, id := range []string{"a", "b"} {
		if err := r.Start(ctx, &fleetv1.Session{Id: id, Gpu: 3, Slot: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	refuse = true
	made := len(fakes)
	mu.Unlock()
	if err := r.Start(ctx, &fleetv1.Session{Id: "c", Gpu: 3, Slot: 2}); err == nil || !strings.Contains(err.Error(), "no memory left") {
		t.Errorf("start with no model to be had: %v", err)
	}
	if made != 2 {
		t.Errorf("%d models made for 2 sessions, want 2 (one prewarmed)", made)
	}

	// Only b speaks, so only b's model runs (and fails).
	tone := make([]float32, pipeline.SampleRate/2)
	for i := range tone {
		tone[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/pipeline.SampleRate))
	}
	if err := r.PushAudio(ctx, "b", wav.Encode16(tone, pipeline.SampleRate), false); err != nil {
		t.Fatal(err)
	}
	for range 3 * pipeline.LatencyTicks {
		for _, id := range []string{"a", "b"} {
			select {
			case clocks[id].Ticks() <- time.Time{}:
			case e := <-r.Ended():
				if e.SessionID != "b" || e.Reason != fleetv1.EndReason_END_REASON_ERROR || !strings.Contains(e.Message, "boom") {
					t.Fatalf("ended %+v, want b with the model's error", e)
				}
				goto ended
			case <-time.After(10 * time.Second):
				t.Fatalf("session %s took no tick", id)
			}
		}
	}
	t.Fatal("the session whose model failed did not end")
ended:
	if st, err := r.Status("a"); err != nil || st.State != fleetv1.SessionState_SESSION_STATE_READY {
		t.Errorf("session a: %+v, %v; want it running", st, err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, f := range fakes {
		if !f.Closed() {
			t.Errorf("model %d not closed by Close", i)
		}
	}
}

// TestBatchSessions runs two speaking sessions of the real default model
// through one GPU's batching executor (Config.BatchSessions): both render
// their frames, and Close stops the executor (goleak, TestMain).
func TestBatchSessions(t *testing.T) {
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clocks := map[string]*pipeline.ManualClock{}
	r, err := New(Config{
		Devices:       []*fleetv1.GPU{{Index: 0, Slots: 2}},
		Model:         newModel(t),
		BatchSessions: 4,
		BatchDelay:    2 * time.Millisecond,
		Prewarm:       2,
		Avatar:        func(string) (*avatar.Pack, error) { return pack, nil },
		Media:         func(*fleetv1.Session, MediaHooks) (Media, error) { return &sink{}, nil },
		Clock: func(s *fleetv1.Session) pipeline.Clock {
			mu.Lock()
			defer mu.Unlock()
			clocks[s.GetId()] = pipeline.NewManualClock()
			return clocks[s.GetId()]
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.batchers) != 1 {
		t.Fatalf("%d batching executors, want 1", len(r.batchers))
	}
	ctx := context.Background()
	tone := make([]float32, pipeline.SampleRate/2)
	for i := range tone {
		tone[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/pipeline.SampleRate))
	}
	ids := []string{"a", "b"}
	for i, id := range ids {
		if err := r.Start(ctx, &fleetv1.Session{Id: id, Gpu: 0, Slot: uint32(i)}); err != nil {
			t.Fatal(err)
		}
		if err := r.PushAudio(ctx, id, wav.Encode16(tone, pipeline.SampleRate), false); err != nil {
			t.Fatal(err)
		}
	}
	const ticks = pipeline.LatencyTicks + 8
	for range ticks {
		for _, id := range ids {
			select {
			case clocks[id].Ticks() <- time.Time{}:
			case e := <-r.Ended():
				t.Fatalf("session ended: %+v", e)
			case <-time.After(10 * time.Second):
				t.Fatalf("session %s took no tick", id)
			}
		}
	}
	for _, id := range ids {
		deadline := time.Now().Add(10 * time.Second)
		st, err := r.Stats(id)
		for err == nil && st.Frames < ticks && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			st, err = r.Stats(id)
		}
		if err != nil || st.Frames != ticks || st.Inferred == 0 {
			t.Errorf("session %s: %+v, %v; want %d frames, some inferred", id, st, err, ticks)
		}
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
