package mediaruntime

import (
	"context"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// TestTransportEndsSession: MediaHooks.End ends the session with the
// transport's reason at the next lifetime check (the first call wins), and
// PushSpeech queues speech that Interrupt drops.
func TestTransportEndsSession(t *testing.T) {
	r, clock, sinkOf := lifetimeRuntime(t, 2)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if err := r.Start(ctx, &fleetv1.Session{Id: id, Gpu: 0, Slot: map[string]uint32{"a": 0, "b": 1}[id]}); err != nil {
			t.Fatal(err)
		}
	}
	h := sinkOf("a").hooks
	if !h.PushSpeech(make([]float32, 16000), func() {}) {
		t.Fatal("PushSpeech refused a second of speech")
	}
	s, err := r.get("a")
	if err != nil {
		t.Fatal(err)
	}
	if q := s.p().Status().Queued; q != time.Second {
		t.Fatalf("queued %v after PushSpeech of 1 s", q)
	}
	h.Interrupt()
	if q := s.p().Status().Queued; q != 0 {
		t.Fatalf("queued %v after Interrupt", q)
	}
	h.End(fleetv1.EndReason_END_REASON_VIEWER_GONE, "the agent left")
	h.End(fleetv1.EndReason_END_REASON_ERROR, "too late")
	clock.check()
	expectEnded(t, r, "a", fleetv1.EndReason_END_REASON_VIEWER_GONE)
	expectNoneEnded(t, r)
	if _, err := r.Status("b"); err != nil {
		t.Errorf("the other session: %v", err)
	}
	// After the end the hooks do nothing.
	h.End(fleetv1.EndReason_END_REASON_VIEWER_GONE, "again")
	_ = h.PushSpeech(make([]float32, 160), nil)
	clock.check()
	expectNoneEnded(t, r)
}
