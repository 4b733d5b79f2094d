// Package slotwatch makes etcd the source of truth for which sessions a
// worker runs. A session runs only while its slot key
// (fleet/slots/<worker>/<gpu>/<slot>) holds its id; the watcher follows the
// worker's slot prefix and stops a local session as soon as its key is
// deleted or taken over — because the control plane ended the session, a
// reaper freed the slot, or the worker's lease (and with it every slot) is
// gone. gRPC StopSession is only the fast path to the same end.
package slotwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	bySlot map[string]string // slot key → session id
	byID   map[string]string // session id → slot key
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
	}
}

// Track starts watching a session's slot. Call it once the session runs,
// then check Owner again: a deletion before Track is caught by that check,
// one after it by the watch.
func (w *Watcher) Track(sessionID string, gpu, slot uint32) {
	key := w.store.Keys().Slot(w.worker, gpu, slot)
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.byID[sessionID]; ok {
		delete(w.bySlot, old)
	}
	w.bySlot[key] = sessionID
	w.byID[sessionID] = key
}

// Untrack forgets a session (it stopped).
func (w *Watcher) Untrack(sessionID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.untrackLocked(sessionID)
}

func (w *Watcher) untrackLocked(sessionID string) {
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
	key := w.store.Keys().Slot(w.worker, gpu, slot)
	resp, err := w.store.Client().Get(ctx, key)
	if err != nil {
		return "", fmt.Errorf("read slot %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// Run watches the slots until ctx ends. After any interruption of the watch
// (compaction, lost leader, etcd restart) it reconciles every tracked
// session against a fresh read, so no deletion is missed.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		rev, err := w.reconcile(ctx)
		if err == nil {
			backoff = 100 * time.Millisecond
			err = w.watch(ctx, rev+1)
		}
		if ctx.Err() != nil {
			return nil
		}
		w.log.Warn("slot watch interrupted; reconciling", "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// reconcile stops every tracked session whose slot no longer holds it and
// returns the revision the check was made at.
func (w *Watcher) reconcile(ctx context.Context) (int64, error) {
	prefix := w.store.Keys().WorkerSlots(w.worker)
	resp, err := w.store.Client().Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list slots %s: %w", prefix, err)
	}
	held := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		held[string(kv.Key)] = string(kv.Value)
	}
	w.mu.Lock()
	var lost []string
	for key, id := range w.bySlot {
		if held[key] != id {
			lost = append(lost, id)
		}
	}
	w.mu.Unlock()
	for _, id := range lost {
		w.stopLost(ctx, id)
	}
	return resp.Header.Revision, nil
}

func (w *Watcher) watch(ctx context.Context, fromRev int64) error {
	prefix := w.store.Keys().WorkerSlots(w.worker)
	// WithRequireLeader: a member cut off from the cluster ends the watch
	// instead of silently delivering nothing.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range w.store.Client().Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(fromRev)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", prefix, err)
		}
		for _, ev := range resp.Events {
			w.check(ctx, string(ev.Kv.Key))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch channel closed")
}

// check re-reads a changed slot key of a tracked session and stops the
// session if the key no longer holds it. Re-reading (instead of trusting the
// event) keeps a late event about a slot's previous session from stopping
// the session that holds the slot now.
func (w *Watcher) check(ctx context.Context, key string) {
	w.mu.Lock()
	id, ok := w.bySlot[key]
	w.mu.Unlock()
	if !ok {
		return
	}
	resp, err := w.store.Client().Get(ctx, key)
	if err != nil {
		// The reconcile after the interrupted watch catches it.
		w.log.Warn("read changed slot", "key", key, "err", err)
		return
	}
	if len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == id {
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
