package fleetstore_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// reserveSession places a ready session id on slot of worker w1.
func reserveSession(t *testing.T, s *fleetstore.Store, lease clientv3.LeaseID, rev int64, id string, slot uint32) (*fleetv1.Session, int64) {
	t.Helper()
	sess := &fleetv1.Session{Id: id, State: fleetv1.SessionState_SESSION_STATE_READY}
	srev, ok, err := s.Reserve(t.Context(), fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev, Slot: slot}, sess)
	if err != nil || !ok {
		t.Fatalf("reserve %s: %v %v", id, ok, err)
	}
	return sess, srev
}

func pending(t *testing.T, s *fleetstore.Store, id string) []fleetstore.SpeechEntry {
	t.Helper()
	es, err := s.PendingSpeech(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func texts(es []fleetstore.SpeechEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Text
	}
	return out
}

func enqueue(t *testing.T, s *fleetstore.Store, sess, text string, replace bool) string {
	t.Helper()
	id, err := s.EnqueueSpeech(t.Context(), sess, text, replace)
	if err != nil {
		t.Fatalf("enqueue %q: %v", text, err)
	}
	if !fleetstore.ValidSpeechID(id) {
		t.Fatalf("speech id %q is not valid", id)
	}
	return id
}

// TestSpeechQueue: entries are listed in the order queued, shortened and
// deleted only by an ack that saw their current text, replaced by an
// interrupting speak, and cleared by an interrupt.
func TestSpeechQueue(t *testing.T) {
	s, cli := startStore(t)
	ctx := t.Context()
	lease, rev := registerWorker(t, s, cli, "w1")
	reserveSession(t, s, lease, rev, "s1", 0)

	id1 := enqueue(t, s, "s1", "One. Two. Three.", false)
	id2 := enqueue(t, s, "s1", "Four.", false)
	if id1 >= id2 {
		t.Fatalf("ids %s, %s do not sort in queue order", id1, id2)
	}
	if got := pending(t, s, "s1"); !slices.Equal(texts(got), []string{"One. Two. Three.", "Four."}) || got[0].ID != id1 {
		t.Fatalf("pending = %+v", got)
	}

	acks := []struct {
		name, id, prev, remaining string
		ok                        bool
		want                      []string
	}{
		{"first sentence spoken", id1, "One. Two. Three.", "Two. Three.", true, []string{"Two. Three.", "Four."}},
		{"stale ack changes nothing", id1, "One. Two. Three.", "Three.", false, []string{"Two. Three.", "Four."}},
		{"second sentence spoken", id1, "Two. Three.", "Three.", true, []string{"Three.", "Four."}},
		{"last sentence spoken deletes", id1, "Three.", "", true, []string{"Four."}},
		{"an ack never resurrects", id1, "Three.", "Three.", false, []string{"Four."}},
		{"an ack with an empty prev never creates", id1, "", "Three.", false, []string{"Four."}},
	}
	for _, a := range acks {
		ok, err := s.AckSpeech(ctx, "s1", a.id, a.prev, a.remaining)
		if err != nil || ok != a.ok {
			t.Fatalf("%s: ok=%v err=%v, want ok=%v", a.name, ok, err, a.ok)
		}
		if got := texts(pending(t, s, "s1")); !slices.Equal(got, a.want) {
			t.Fatalf("%s: pending %q, want %q", a.name, got, a.want)
		}
	}

	enqueue(t, s, "s1", "Five.", false)
	id6 := enqueue(t, s, "s1", "Six.", true)
	if got := pending(t, s, "s1"); len(got) != 1 || got[0].ID != id6 || got[0].Text != "Six." {
		t.Fatalf("after an interrupting speak: %+v, want only Six.", got)
	}
	if ok, err := s.AckSpeech(ctx, "s1", id2, "Four.", ""); err != nil || ok {
		t.Fatalf("ack of an interrupted text: ok=%v err=%v, want false", ok, err)
	}
	if err := s.DeleteSpeech(ctx, "s1", id6); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, "s1", "Seven.", false)
	if err := s.ClearSpeech(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, s, "s1"); len(got) != 0 {
		t.Fatalf("after clear: %+v", got)
	}
}

// TestSpeechQueueBound: a session's queue never holds more than
// MaxPendingSpeech bytes of text, even with concurrent enqueues; an
// interrupting speak only counts its own text.
func TestSpeechQueueBound(t *testing.T) {
	s, cli := startStore(t)
	ctx := t.Context()
	lease, rev := registerWorker(t, s, cli, "w1")
	reserveSession(t, s, lease, rev, "s1", 0)

	const part = fleetstore.MaxPendingSpeech / 8
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.EnqueueSpeech(ctx, "s1", strings.Repeat("a", part), false)
		})
	}
	wg.Wait()
	accepted := 0
	for _, err := range errs {
		switch {
		case err == nil:
			accepted++
		case !errors.Is(err, fleetstore.ErrSpeechQueueFull):
			t.Fatalf("enqueue: %v, want nil or ErrSpeechQueueFull", err)
		}
	}
	got := pending(t, s, "s1")
	if accepted != 8 || len(got) != 8 {
		t.Fatalf("%d accepted, %d queued, want 8 of 12", accepted, len(got))
	}
	ids := make([]string, len(got))
	for i, e := range got {
		ids[i] = e.ID
	}
	if !slices.IsSorted(ids) || len(slices.Compact(ids)) != 8 {
		t.Fatalf("ids %v are not distinct and sorted", ids)
	}
	if _, err := s.EnqueueSpeech(ctx, "s1", "x", false); !errors.Is(err, fleetstore.ErrSpeechQueueFull) {
		t.Fatalf("one more byte: %v, want ErrSpeechQueueFull", err)
	}
	if _, err := s.EnqueueSpeech(ctx, "s1", strings.Repeat("b", fleetstore.MaxPendingSpeech), true); err != nil {
		t.Fatalf("an interrupting speak of the whole bound: %v", err)
	}
	if _, err := s.EnqueueSpeech(ctx, "s1", strings.Repeat("b", fleetstore.MaxPendingSpeech+1), true); !errors.Is(err, fleetstore.ErrSpeechQueueFull) {
		t.Fatalf("a text over the bound: %v, want ErrSpeechQueueFull", err)
	}
}

// TestSpeechEndsWithSession: ending, unreserving or deleting a session
// clears its queue in the same transaction, and nothing can be queued for a
// session that ended or does not exist.
func TestSpeechEndsWithSession(t *testing.T) {
	s, cli := startStore(t)
	ctx := t.Context()
	lease, rev := registerWorker(t, s, cli, "w1")
	reserveSession(t, s, lease, rev, "ended", 0)
	unres, unresRev := reserveSession(t, s, lease, rev, "unreserved", 1)
	other, _ := reserveSession(t, s, lease, rev, "other", 2)

	for _, id := range []string{"ended", "unreserved", other.GetId()} {
		enqueue(t, s, id, "Hello there. How are you?", false)
	}
	if _, _, err := s.EndSession(ctx, "ended", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil {
		t.Fatal(err)
	}
	// Unreserve is guarded by the record's revision; the enqueue left it be.
	if err := s.Unreserve(ctx, unres, unresRev); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ended", "unreserved"} {
		if got := pending(t, s, id); len(got) != 0 {
			t.Fatalf("%s: %d entries outlive the session", id, len(got))
		}
	}
	if got := pending(t, s, "other"); len(got) != 1 {
		t.Fatalf("another session's queue: %+v, want its one entry", got)
	}
	if _, err := s.EnqueueSpeech(ctx, "ended", "Too late.", false); !errors.Is(err, fleetstore.ErrSessionEnded) {
		t.Fatalf("enqueue on an ended session: %v, want ErrSessionEnded", err)
	}
	if _, err := s.EnqueueSpeech(ctx, "unreserved", "Nobody.", false); !errors.Is(err, fleetstore.ErrNotFound) {
		t.Fatalf("enqueue on a missing session: %v, want ErrNotFound", err)
	}

	// Retention expiry of a record whose queue somehow survived (written
	// by an older release) takes the queue too.
	_, endRev, err := s.Session(ctx, "ended")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, s.Keys().Speech("ended", "00000000000000000001"), "Stray."); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSessionRecord(ctx, "ended", endRev); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, s, "ended"); len(got) != 0 {
		t.Fatalf("after the record's deletion: %+v", got)
	}
}
