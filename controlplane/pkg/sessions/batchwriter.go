package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// batchWriter group-commits session state changes: requests that arrive
// while a commit is in flight go to etcd together in one transaction (the
// reservation cannot be batched: each has its own conditions); when idle, a
// request is committed at once, alone.
//
// A create's ready mark goes through Mark and nobody waits for it: the
// create answers once the reservation is committed and the worker has
// started the session. Until the mark lands the record says starting; Await
// lets a read on this replica wait for it, and if this replica dies before
// writing it the supervisor's reaper finds the starting record whose worker
// runs the session and marks it ready (or fails it, as before, when the
// worker does not run it).
type batchWriter struct {
	store    batchStore
	log      *slog.Logger
	reqs     chan *writeReq
	maxBatch int
	lanes    int           // commits in flight at once
	stopped  chan struct{} // closed when Run returns: writes fail fast
	// markTries and markBackoff bound the retries of a mark whose commit
	// failed for another reason than a conflict.
	markTries   int
	markBackoff time.Duration
	// commitTimeout bounds one commit attempt: an etcd that does not
	// answer (no leader, a member starved of CPU) must not hold a lane,
	// and every mark queued behind it, for longer.
	commitTimeout time.Duration
	// testHookMarkDelay holds every batch with a mark back that long
	// before its commit (Options.TestHookMarkDelay; tests only).
	testHookMarkDelay time.Duration

	mu      sync.Mutex
	pending map[string]chan struct{} // session id → closed when its mark settles
}

// batchStore is the part of the store the writer commits through.
type batchStore interface {
	UpdateSessions(ctx context.Context, updates []fleetstore.SessionUpdate) error
	UpdateSession(ctx context.Context, sess *fleetv1.Session, rev int64) (int64, error)
}

type writeReq struct {
	update fleetstore.SessionUpdate
	done   chan error // nil for a mark: nobody waits
}

// defaultCommitTimeout bounds one group commit: etcd's own request
// timeout is about as long, so a commit that takes longer is not coming.
const defaultCommitTimeout = 5 * time.Second

func newBatchWriter(store batchStore, log *slog.Logger) *batchWriter {
	// etcd refuses transactions of more than 128 operations by default.
	return &batchWriter{store: store, log: log, reqs: make(chan *writeReq, 1024), maxBatch: 64, lanes: 4,
		stopped: make(chan struct{}), markTries: 5, markBackoff: 20 * time.Millisecond, commitTimeout: defaultCommitTimeout,
		pending: map[string]chan struct{}{}}
}

// Mark queues one record change, guarded by its revision, without waiting
// for it. A mark that conflicts (the record moved on: deleted, ended) is
// dropped; one that keeps failing is left to the reaper. It blocks only
// while the queue is full.
func (w *batchWriter) Mark(sess *fleetv1.Session, rev int64) {
	id := sess.GetId()
	w.mu.Lock()
	if _, ok := w.pending[id]; !ok {
		w.pending[id] = make(chan struct{})
	}
	w.mu.Unlock()
	select {
	case w.reqs <- &writeReq{update: fleetstore.SessionUpdate{Session: sess, Revision: rev}}:
	case <-w.stopped:
		w.settle(id)
	}
}

// Await waits until the mark queued for a session, if any, has settled
// (committed, dropped or given up). It reports whether one was pending.
func (w *batchWriter) Await(ctx context.Context, id string) bool {
	w.mu.Lock()
	ch, ok := w.pending[id]
	w.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-ch:
	case <-ctx.Done():
	case <-w.stopped:
	}
	return true
}

func (w *batchWriter) settle(id string) {
	w.mu.Lock()
	if ch, ok := w.pending[id]; ok {
		close(ch)
		delete(w.pending, id)
	}
	w.mu.Unlock()
}

// finish reports a request's outcome: to its caller, or for a mark by
// settling it (a failure other than a conflict is left to the reaper).
func (w *batchWriter) finish(r *writeReq, err error) {
	if r.done != nil {
		r.done <- err
		return
	}
	id := r.update.Session.GetId()
	if err != nil && !errors.Is(err, fleetstore.ErrConflict) {
		w.log.Warn("ready mark not written; the reaper will recover it", "session", id, "err", err)
	}
	w.settle(id)
}

// Write commits one record change, guarded by its revision, and returns
// fleetstore.ErrConflict if the record moved on.
func (w *batchWriter) Write(ctx context.Context, sess *fleetv1.Session, rev int64) error {
	r := &writeReq{update: fleetstore.SessionUpdate{Session: sess, Revision: rev}, done: make(chan error, 1)}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return fmt.Errorf("write session %s: %w", sess.GetId(), ctx.Err())
	case <-w.stopped:
		return fmt.Errorf("write session %s: %w", sess.GetId(), errStopped)
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("write session %s: %w", sess.GetId(), ctx.Err())
	case <-w.stopped:
		return fmt.Errorf("write session %s: %w", sess.GetId(), errStopped)
	}
}

var errStopped = errors.New("control plane shutting down")

// Run commits batches until ctx ends.
func (w *batchWriter) Run(ctx context.Context) error {
	defer close(w.stopped)
	var wg sync.WaitGroup
	for range w.lanes {
		wg.Go(func() { w.lane(ctx) })
	}
	wg.Wait()
	return nil
}

func (w *batchWriter) lane(ctx context.Context) {
	batch := make([]*writeReq, 0, w.maxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-w.reqs:
			batch = append(batch, r)
		}
	fill:
		for len(batch) < w.maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		w.commit(ctx, batch)
	}
}

// commit writes one batch. A batch that fails for another reason than a
// conflict (etcd slow, no leader) gives callers that wait their error at
// once and retries its marks as one batch, markTries times in all with
// doubling waits, so a lane stalls for at most a few hundred milliseconds;
// ctx only cuts those waits short.
func (w *batchWriter) commit(ctx context.Context, batch []*writeReq) {
	w.holdMarks(ctx, batch)
	wctx := context.WithoutCancel(ctx)
	for try := 1; len(batch) > 0; try++ {
		var err error
		if len(batch) > 1 {
			updates := make([]fleetstore.SessionUpdate, len(batch))
			for i, r := range batch {
				updates[i] = r.update
			}
			err = w.bounded(wctx, func(ctx context.Context) error { return w.store.UpdateSessions(ctx, updates) })
		} else {
			err = w.updateOne(wctx, batch[0])
		}
		if errors.Is(err, fleetstore.ErrConflict) && len(batch) > 1 {
			// One record moved on (its session ended meanwhile): find which.
			for _, r := range batch {
				w.finish(r, w.updateOne(wctx, r))
			}
			return
		}
		if err == nil || errors.Is(err, fleetstore.ErrConflict) || try >= w.markTries || ctx.Err() != nil {
			for _, r := range batch {
				w.finish(r, err)
			}
			return
		}
		marks := make([]*writeReq, 0, len(batch))
		for _, r := range batch {
			if r.done != nil {
				r.done <- err
			} else {
				marks = append(marks, r)
			}
		}
		batch = marks
		select {
		case <-ctx.Done():
		case <-time.After(w.markBackoff << (try - 1)):
		}
	}
}

// bounded runs one commit attempt under commitTimeout.
func (w *batchWriter) bounded(ctx context.Context, f func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, w.commitTimeout)
	defer cancel()
	return f(cctx)
}

func (w *batchWriter) updateOne(ctx context.Context, r *writeReq) error {
	return w.bounded(ctx, func(ctx context.Context) error {
		_, err := w.store.UpdateSession(ctx, r.update.Session, r.update.Revision)
		return err
	})
}

// holdMarks is the test hook Options.TestHookMarkDelay: it holds a batch
// holding a mark back before its commit (a replica killed meanwhile leaves
// its creates' records starting, for the reaper to recover).
func (w *batchWriter) holdMarks(ctx context.Context, batch []*writeReq) {
	if w.testHookMarkDelay <= 0 || !slices.ContainsFunc(batch, func(r *writeReq) bool { return r.done == nil }) {
		return
	}
	t := time.NewTimer(w.testHookMarkDelay)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
