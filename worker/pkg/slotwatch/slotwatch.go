// Package slotwatch makes etcd the source of truth for which sessions a
// worker runs. A session runs only while its slot key
// (fleet/slots/<worker>/<gpu>/<slot>) holds its id; the watcher follows the
// worker's slot prefix and stops a local session as soon as its key is
// deleted or taken over — because the control plane ended the session, a
// reaper freed the slot, or the worker's lease (and with it every slot) is
// gone. gRPC StopSession is only the fast path to the same end.
//
// The watcher keeps the worker's slot keys as of a known revision (a full
// listing, then every watch event applied in order), so a start can be
// checked against its reservation's revision without a read from etcd.
package slotwatch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// StopFunc stops a local session whose slot is gone; reason is the end
// reason in the session record when it has one.
type StopFunc func(ctx context.Context, sessionID string, reason fleetv1.EndReason)

// Watcher tracks the worker's running sessions against their slot keys.
type Watcher struct {
	store  *fleetstore.Store
	worker string
	stop   StopFunc
	log    *slog.Logger

	mu     sync.Mutex
	bySlot map[string]string // tracked: slot key → session id
	byID   map[string]string // tracked: session id → slot key
	// inView marks sessions tracked by TrackIfHeld: the view held them
	// then, so any later change the watch applies is news about them.
	// Others (Track) were checked by a read the view may lag behind, so
	// a change is confirmed by reading the key again.
	inView map[string]bool
	held   map[string]string // every slot key of the worker → session id, as of rev
	rev    int64             // etcd revision held reflects; 0 before the first listing
	moved  chan struct{}     // closed and replaced whenever rev advances
	// read holds what OwnerAt read from etcd when the view lagged behind
	// the revision asked for: slot key → owner and that revision, until
	// the view catches up.
	read map[string]readOwner
}

type readOwner struct {
	owner string
	rev   int64
}

// New returns a Watcher for worker's slots; stop is called for each tracked
// session that lost its slot.
func New(store *fleetstore.Store, worker string, stop StopFunc, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{
		store:  store,
		worker: worker,
		stop:   stop,
		log:    log,
		bySlot: make(map[string]string),
		byID:   make(map[string]string),
		inView: make(map[string]bool),
		held:   make(map[string]string),
		moved:  make(chan struct{}),
		read:   make(map[string]readOwner),
	}
}

// Track starts watching a session's slot. Call it once the session runs,
// then check Owner again: a deletion before Track is caught by that check,
// one after it by the watch.
func (w *Watcher) Track(sessionID string, gpu, slot uint32) {
	key := w.store.Keys().Slot(w.worker, gpu, slot)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.trackLocked(sessionID, key)
}

func (w *Watcher) trackLocked(sessionID, key string) {
	if old, ok := w.byID[sessionID]; ok {
		delete(w.bySlot, old)
	}
	delete(w.inView, sessionID)
	w.bySlot[key] = sessionID
	w.byID[sessionID] = key
}

// TrackIfHeld tracks a running session if, in the watcher's view, its slot
// still holds it; the check and the tracking are one step, so a deletion
// is either seen here (false) or stops the tracked session later. Use it
// after a start checked with OwnerAt, in place of Track and a second read.
// When OwnerAt had to read etcd because the view lagged (a watch stuck on
// a dying member) and the view still lags, that read stands in for the
// view: the session is tracked as after Track, so whatever the view later
// applies about its slot is checked by reading again.
func (w *Watcher) TrackIfHeld(sessionID string, gpu, slot uint32) bool {
	key := w.store.Keys().Slot(w.worker, gpu, slot)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held[key] == sessionID {
		w.trackLocked(sessionID, key)
		w.inView[sessionID] = true
		return true
	}
	if r, ok := w.read[key]; ok && r.owner == sessionID && w.rev < r.rev {
		delete(w.read, key)
		w.trackLocked(sessionID, key)
		return true
	}
	return false
}

// Untrack forgets a session (it stopped).
func (w *Watcher) Untrack(sessionID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.untrackLocked(sessionID)
}

func (w *Watcher) untrackLocked(sessionID string) {
	delete(w.inView, sessionID)
	if key, ok := w.byID[sessionID]; ok {
		delete(w.byID, sessionID)
		if w.bySlot[key] == sessionID {
			delete(w.bySlot, key)
		}
	}
}

// Tracked is the number of tracked sessions.
func (w *Watcher) Tracked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byID)
}

// Owner reads which session holds a slot now ("" when the slot is free).
// The read is linearizable: a slot freed before the call is seen as free.
func (w *Watcher) Owner(ctx context.Context, gpu, slot uint32) (string, error) {
	return w.store.SlotOwner(ctx, w.worker, gpu, slot)
}

// ownerAtWait bounds how long OwnerAt waits for the watch before reading:
// a watch on an etcd member that died silently delivers nothing until its
// stream breaks, while a read of a live member's own state answers at once
// (fleetstore.SlotOwnerAt). A watch delivers a reservation within
// milliseconds of its commit, so the wait rarely ends this way; when the
// etcd leader died it saved 400 ms of each start.
const ownerAtWait = 100 * time.Millisecond

// OwnerAt says which session holds a slot as of revision rev or later. It
// waits until the watch has applied rev (a reservation reaches the watch
// about as fast as its commit reaches the caller) and answers from the
// watcher's view; if the watch does not get there in time, it reads etcd.
func (w *Watcher) OwnerAt(ctx context.Context, rev int64, gpu, slot uint32) (string, error) {
	key := w.store.Keys().Slot(w.worker, gpu, slot)
	timeout := time.NewTimer(ownerAtWait)
	defer timeout.Stop()
	for {
		w.mu.Lock()
		if w.rev >= rev && w.rev > 0 {
			owner := w.held[key]
			w.mu.Unlock()
			return owner, nil
		}
		moved := w.moved
		w.mu.Unlock()
		select {
		case <-moved:
		case <-timeout.C:
			owner, err := w.store.SlotOwnerAt(ctx, w.worker, gpu, slot, rev)
			if err == nil {
				w.mu.Lock()
				if w.rev < rev {
					w.read[key] = readOwner{owner: owner, rev: rev}
				}
				w.mu.Unlock()
			}
			return owner, err
		case <-ctx.Done():
			return "", fmt.Errorf("wait for slot %s at revision %d: %w", key, rev, ctx.Err())
		}
	}
}

// Run watches the slots until ctx ends, through fleetstore's ListWatch.
// After any interruption of the watch (compaction, lost leader, etcd
// restart) it lists the slots again and stops every tracked session whose
// slot no longer holds it, so no deletion is missed. Progress
// notifications move the view's revision on while nothing of this worker
// changes (OwnerAt waits on it).
func (w *Watcher) Run(ctx context.Context) error {
	return w.store.ListWatch(ctx, fleetstore.ListWatchOptions{
		Prefixes:       []string{w.store.Keys().WorkerSlots(w.worker)},
		ProgressNotify: true,
		Name:           "slots of " + w.worker,
		Log:            w.log,
	}, fleetstore.HandlerFuncs{ReplaceFunc: w.replace, ApplyFunc: w.applyEvents})
}

// replace swaps the view for a fresh listing and stops every tracked
// session whose slot no longer holds it.
func (w *Watcher) replace(ctx context.Context, kvs []fleetstore.KV, rev int64) {
	held := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		held[kv.Key] = string(kv.Value)
	}
	w.mu.Lock()
	w.held = held
	w.advanceLocked(rev)
	var lost, recheck []string
	for key, id := range w.bySlot {
		switch {
		case held[key] == id:
		case w.inView[id]:
			lost = append(lost, id)
		default:
			// Tracked after a read that may be newer than this listing.
			recheck = append(recheck, key)
		}
	}
	w.mu.Unlock()
	w.settle(ctx, lost, recheck)
}

func (w *Watcher) settle(ctx context.Context, lost, recheck []string) {
	for _, id := range lost {
		w.stopLost(ctx, id)
	}
	for _, key := range recheck {
		w.check(ctx, key)
	}
}

func (w *Watcher) advanceLocked(rev int64) {
	if rev > w.rev {
		w.rev = rev
		close(w.moved)
		w.moved = make(chan struct{})
		for key, r := range w.read {
			if r.rev <= rev {
				delete(w.read, key) // the view has caught up: it decides
			}
		}
	}
}

// applyEvents folds one watch response into the view, in revision order,
// stops the sessions tracked from the view whose slot no longer holds them,
// and reads again the changed slot keys of other tracked sessions (their
// event may predate the read that let them start).
func (w *Watcher) applyEvents(ctx context.Context, events []fleetstore.Event, rev int64) {
	var lost, recheck []string
	w.mu.Lock()
	for _, ev := range events {
		key := ev.KV.Key
		if ev.Type == fleetstore.EventDelete {
			delete(w.held, key)
		} else {
			w.held[key] = string(ev.KV.Value)
		}
		id, ok := w.bySlot[key]
		switch {
		case !ok || w.held[key] == id:
		case w.inView[id]:
			lost = append(lost, id)
		default:
			recheck = append(recheck, key)
		}
	}
	w.advanceLocked(rev)
	w.mu.Unlock()
	w.settle(ctx, lost, recheck)
}

// check re-reads a changed slot key of a tracked session and stops the
// session if the key no longer holds it.
func (w *Watcher) check(ctx context.Context, key string) {
	w.mu.Lock()
	id, ok := w.bySlot[key]
	w.mu.Unlock()
	if !ok {
		return
	}
	owner, _, err := w.store.SlotOwnerByKey(ctx, key)
	if err != nil {
		// The listing after the interrupted watch catches it.
		w.log.Warn("read changed slot", "key", key, "err", err)
		return
	}
	if owner == id {
		return
	}
	w.stopLost(ctx, id)
}

func (w *Watcher) stopLost(ctx context.Context, id string) {
	w.mu.Lock()
	_, ok := w.byID[id]
	w.untrackLocked(id)
	w.mu.Unlock()
	if !ok {
		return // untracked meanwhile: stopped by another path
	}
	reason := w.endReason(ctx, id)
	w.log.Info("slot gone; stopping session", "session", id, "reason", reason.String())
	w.stop(ctx, id, reason)
}

// endReason is the reason in the session record when it has ended; a slot
// gone while the record is live (or missing) means the worker lost it.
func (w *Watcher) endReason(ctx context.Context, id string) fleetv1.EndReason {
	sess, _, err := w.store.Session(ctx, id)
	if err == nil && fleetstore.Terminal(sess.GetState()) {
		return sess.GetEndReason()
	}
	return fleetv1.EndReason_END_REASON_WORKER_LOST
}
