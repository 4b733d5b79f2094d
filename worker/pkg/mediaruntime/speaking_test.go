package mediaruntime

import (
	"context"
	"sync"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// speakingRuntime is a runtime whose sessions each run on their own manual
// media clock (tick drives one).
func speakingRuntime(t *testing.T, buffer int) (r *Runtime, tick func(id string)) {
	t.Helper()
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clocks := map[string]*pipeline.ManualClock{}
	r, err = New(Config{
		Devices: []*fleetv1.GPU{{Index: 0, Slots: 2}},
		Model:   newModel(t),
		Avatar:  func(string) (*avatar.Pack, error) { return pack, nil },
		Media:   func(*fleetv1.Session, MediaHooks) (Media, error) { return &sink{}, nil },
		Clock: func(s *fleetv1.Session) pipeline.Clock {
			mu.Lock()
			defer mu.Unlock()
			clocks[s.GetId()] = pipeline.NewManualClock()
			return clocks[s.GetId()]
		},
		SpeakingBuffer: buffer,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, func(id string) {
		t.Helper()
		mu.Lock()
		c := clocks[id]
		mu.Unlock()
		select {
		case c.Ticks() <- time.Time{}:
		case <-time.After(10 * time.Second):
			t.Fatalf("session %s took no tick: its media goroutine is blocked", id)
		}
	}
}

// TestSpeakingReported: a session's speech is reported as started, then
// ended, for that session and no other, with media times one utterance
// apart; the channel closes with Close.
func TestSpeakingReported(t *testing.T) {
	r, tick := speakingRuntime(t, 0)
	ctx := context.Background()
	owner := &fleetv1.Session{Id: "talker", Owner: "acme", Slot: 0}
	for _, s := range []*fleetv1.Session{owner, {Id: "quiet", Slot: 1}} {
		if err := r.Start(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.PushAudio(ctx, "talker", toneWAV(), false); err != nil {
		t.Fatal(err)
	}
	var got []runtime.Speaking
	for i := 0; len(got) < 2 && i < 500; i++ {
		tick("talker")
		tick("quiet")
		select {
		case sp := <-r.Speaking():
			got = append(got, sp)
		default:
		}
	}
	// The last change may still be on its way out of the last tick.
	if len(got) < 2 {
		select {
		case sp := <-r.Speaking():
			got = append(got, sp)
		case <-time.After(10 * time.Second):
		}
	}
	if len(got) != 2 {
		t.Fatalf("speaking changes %+v, want started and ended", got)
	}
	start, end := got[0], got[1]
	if start.SessionID != "talker" || !start.Started || start.Session != owner {
		t.Errorf("first change %+v, want talker started with its record", start)
	}
	if end.SessionID != "talker" || end.Started || end.Session != owner {
		t.Errorf("second change %+v, want talker ended with its record", end)
	}
	// The tone lasts 500 ms; speech is sent in 40 ms frames.
	if d := end.MediaTime - start.MediaTime; d < 400*time.Millisecond || d > 700*time.Millisecond {
		t.Errorf("speech lasted %v of media time (%v → %v), want about 500ms", d, start.MediaTime, end.MediaTime)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if sp, ok := <-r.Speaking(); ok {
		t.Errorf("speaking change %+v after Close, want the channel closed", sp)
	}
}

// TestSpeakingNeverBlocks: with nobody reading Speaking and a buffer of
// one, two sessions speak to the end; every media tick is taken, the first
// change waits in the buffer and the other three are dropped and counted.
func TestSpeakingNeverBlocks(t *testing.T) {
	r, tick := speakingRuntime(t, 1)
	ctx := context.Background()
	t.Cleanup(func() {
		if err := r.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	for i, id := range []string{"a", "b"} {
		if err := r.Start(ctx, &fleetv1.Session{Id: id, Slot: uint32(i)}); err != nil {
			t.Fatal(err)
		}
		if err := r.PushAudio(ctx, id, toneWAV(), false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.speakingDropped.Load() < 3 && time.Now().Before(deadline) {
		tick("a")
		tick("b")
	}
	if n := r.speakingDropped.Load(); n != 3 {
		t.Fatalf("%d changes dropped, want 3", n)
	}
	for _, id := range []string{"a", "b"} {
		st, err := r.Status(id)
		if err != nil || st.Speaking {
			t.Errorf("session %s: %+v, %v; want it done speaking", id, st, err)
		}
	}
	if sp := <-r.Speaking(); !sp.Started {
		t.Errorf("buffered change %+v, want a start", sp)
	}
}
