package slotwatch

import (
	"context"
	"sync"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
)

var servers *fleettest.Servers

func TestMain(m *testing.M) { fleettest.Main(m, &servers) }

type stopRecorder struct {
	mu      sync.Mutex
	stopped map[string]fleetv1.EndReason
}

func (r *stopRecorder) stop(_ context.Context, id string, reason fleetv1.EndReason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped[id] = reason
}

func (r *stopRecorder) reason(id string) (fleetv1.EndReason, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reason, ok := r.stopped[id]
	return reason, ok
}

// startWatcher runs a watcher for worker until the test ends.
func startWatcher(t *testing.T, store *fleetstore.Store, worker string) (*Watcher, *stopRecorder) {
	t.Helper()
	rec := &stopRecorder{stopped: map[string]fleetv1.EndReason{}}
	w := New(store, worker, rec.stop, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w, rec
}

// reserve takes a slot for a new session the way the control plane does.
func reserve(t *testing.T, store *fleetstore.Store, worker, id string, gpu, slot uint32) {
	t.Helper()
	_, ok, err := store.Reserve(t.Context(), fleetstore.Reservation{Worker: worker, GPU: gpu, Slot: slot},
		&fleetv1.Session{Id: id, State: fleetv1.SessionState_SESSION_STATE_STARTING})
	if err != nil || !ok {
		t.Fatalf("reserve %s on %d/%d: ok=%v err=%v", id, gpu, slot, ok, err)
	}
}

func TestEndedSessionIsStoppedWithItsReason(t *testing.T) {
	store := servers.Store(t)
	worker := servers.Name(t, "w")
	reserve(t, store, worker, "s1", 0, 0)
	w, rec := startWatcher(t, store, worker)
	w.Track("s1", 0, 0)
	if owner, err := w.Owner(t.Context(), 0, 0); err != nil || owner != "s1" {
		t.Fatalf("Owner = %q, %v", owner, err)
	}

	// The control plane ends the session: record terminal, slot freed.
	if _, ended, err := store.EndSession(t.Context(), "s1", fleetv1.SessionState_SESSION_STATE_ENDED,
		fleetv1.EndReason_END_REASON_DELETED, "deleted by the API"); err != nil || !ended {
		t.Fatalf("EndSession: ended=%v err=%v", ended, err)
	}
	fleettest.Eventually(t, 5*time.Second, "s1 to be stopped", func() bool {
		_, ok := rec.reason("s1")
		return ok
	})
	if reason, _ := rec.reason("s1"); reason != fleetv1.EndReason_END_REASON_DELETED {
		t.Fatalf("stopped with %s, want DELETED", reason)
	}
	if w.Tracked() != 0 {
		t.Fatalf("still tracking %d sessions", w.Tracked())
	}
	if owner, err := w.Owner(t.Context(), 0, 0); err != nil || owner != "" {
		t.Fatalf("Owner of a freed slot = %q, %v", owner, err)
	}
}

func TestSlotTakenOverStopsSessionButLateEventsDoNot(t *testing.T) {
	store := servers.Store(t)
	worker := servers.Name(t, "w")
	cli := servers.ClientOf(store)
	key := store.Keys().Slot(worker, 1, 0)
	w, rec := startWatcher(t, store, worker)

	// The slot changes hands old → s2 before s2 is tracked; the watch may
	// still deliver the events about "old" after Track. They must not stop s2.
	if _, err := cli.Put(t.Context(), key, "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), key, "s2"); err != nil {
		t.Fatal(err)
	}
	w.Track("s2", 1, 0)
	// An unrelated slot changing must not matter either.
	if _, err := cli.Put(t.Context(), store.Keys().Slot(worker, 1, 1), "other"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, ok := rec.reason("s2"); ok {
		t.Fatal("s2 stopped by events that predate it")
	}

	// Now the key is overwritten by another session: s2 lost its slot.
	if _, err := cli.Put(t.Context(), key, "s3"); err != nil {
		t.Fatal(err)
	}
	fleettest.Eventually(t, 5*time.Second, "s2 to be stopped", func() bool {
		_, ok := rec.reason("s2")
		return ok
	})
	if reason, _ := rec.reason("s2"); reason != fleetv1.EndReason_END_REASON_WORKER_LOST {
		t.Fatalf("stopped with %s, want WORKER_LOST (no session record)", reason)
	}
}

func TestUntrackedSessionIsNotStopped(t *testing.T) {
	store := servers.Store(t)
	worker := servers.Name(t, "w")
	reserve(t, store, worker, "s4", 0, 1)
	w, rec := startWatcher(t, store, worker)
	w.Track("s4", 0, 1)
	w.Untrack("s4")
	if _, err := servers.ClientOf(store).Delete(t.Context(), store.Keys().Slot(worker, 0, 1)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, ok := rec.reason("s4"); ok {
		t.Fatal("an untracked session was stopped")
	}
}

func TestReconcileStopsSessionsWhoseSlotVanishedWhileNotWatching(t *testing.T) {
	store := servers.Store(t)
	worker := servers.Name(t, "w")
	rec := &stopRecorder{stopped: map[string]fleetv1.EndReason{}}
	w := New(store, worker, rec.stop, nil)
	// Tracked before Run, slot never written (or freed before the watch
	// started): the first reconcile must stop it.
	w.Track("s5", 0, 0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	fleettest.Eventually(t, 5*time.Second, "s5 to be stopped", func() bool {
		_, ok := rec.reason("s5")
		return ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A start checked at its reservation's revision is answered from the watch,
// and a session tracked from the view is stopped by the next change of its
// slot without another read.
func TestOwnerAtAndTrackIfHeld(t *testing.T) {
	store := servers.Store(t)
	worker := servers.Name(t, "w")
	w, rec := startWatcher(t, store, worker)
	rev, ok, err := store.Reserve(t.Context(), fleetstore.Reservation{Worker: worker, GPU: 0, Slot: 1},
		&fleetv1.Session{Id: "s1", State: fleetv1.SessionState_SESSION_STATE_STARTING})
	if err != nil || !ok {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	if owner, err := w.OwnerAt(t.Context(), rev, 0, 1); err != nil || owner != "s1" {
		t.Fatalf("OwnerAt(%d) = %q, %v; want s1", rev, owner, err)
	}
	if owner, err := w.OwnerAt(t.Context(), rev, 0, 0); err != nil || owner != "" {
		t.Fatalf("OwnerAt of a free slot = %q, %v", owner, err)
	}
	if w.TrackIfHeld("other", 0, 1) {
		t.Fatal("tracked a session the slot does not hold")
	}
	if !w.TrackIfHeld("s1", 0, 1) {
		t.Fatal("did not track the session the slot holds")
	}
	if _, ended, err := store.EndSession(t.Context(), "s1", fleetv1.SessionState_SESSION_STATE_ENDED,
		fleetv1.EndReason_END_REASON_DELETED, ""); err != nil || !ended {
		t.Fatalf("EndSession: %v %v", ended, err)
	}
	fleettest.Eventually(t, 5*time.Second, "s1 stopped", func() bool {
		_, ok := rec.reason("s1")
		return ok
	})
	if w.TrackIfHeld("s1", 0, 1) {
		t.Fatal("tracked a session whose slot was freed")
	}
	// A revision the watch never reaches falls back to a read.
	if owner, err := w.OwnerAt(t.Context(), rev+1_000_000, 0, 1); err != nil || owner != "" {
		t.Fatalf("OwnerAt(future) = %q, %v", owner, err)
	}
}

// When the watch lags (stuck on a dying etcd member), OwnerAt answers from a
// read, and TrackIfHeld trusts that read until the view catches up; the
// session is then followed like any other and stopped when its slot goes.
func TestLaggingViewTrustsOwnerAtRead(t *testing.T) {
	store := servers.Store(t)
	worker := servers.Name(t, "w")
	rev, ok, err := store.Reserve(t.Context(), fleetstore.Reservation{Worker: worker, GPU: 0, Slot: 0},
		&fleetv1.Session{Id: "s1", State: fleetv1.SessionState_SESSION_STATE_STARTING})
	if err != nil || !ok {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	rec := &stopRecorder{stopped: map[string]fleetv1.EndReason{}}
	w := New(store, worker, rec.stop, nil) // not running yet: its view lags
	owner, err := w.OwnerAt(t.Context(), rev, 0, 0)
	if err != nil || owner != "s1" {
		t.Fatalf("OwnerAt = %q, %v", owner, err)
	}
	if !w.TrackIfHeld("s1", 0, 0) {
		t.Fatal("TrackIfHeld refused a session its read saw holding the slot")
	}
	if w.TrackIfHeld("s2", 0, 0) {
		t.Fatal("TrackIfHeld took a session nobody saw holding the slot")
	}
	// The view catches up, then the slot goes: the session is stopped.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, ended, err := store.EndSession(t.Context(), "s1", fleetv1.SessionState_SESSION_STATE_ENDED,
		fleetv1.EndReason_END_REASON_DELETED, ""); err != nil || !ended {
		t.Fatalf("EndSession: %v %v", ended, err)
	}
	fleettest.Eventually(t, 5*time.Second, "s1 to be stopped", func() bool {
		_, ok := rec.reason("s1")
		return ok
	})
}
