package sessions

import (
	"context"
	"errors"
	"fmt"
	"sync"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// batchWriter group-commits session state changes: requests that arrive
// while a commit is in flight go to etcd together in one transaction. Under
// load this halves the transactions a placement costs (the reservation
// cannot be batched: each has its own conditions); when idle, a request is
// committed at once, alone.
type batchWriter struct {
	store    *fleetstore.Store
	reqs     chan *writeReq
	maxBatch int
	lanes    int           // commits in flight at once
	stopped  chan struct{} // closed when Run returns: writes fail fast
}

type writeReq struct {
	update fleetstore.SessionUpdate
	done   chan error
}

func newBatchWriter(store *fleetstore.Store) *batchWriter {
	// etcd refuses transactions of more than 128 operations by default.
	return &batchWriter{store: store, reqs: make(chan *writeReq, 1024), maxBatch: 64, lanes: 4, stopped: make(chan struct{})}
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
		w.commit(context.WithoutCancel(ctx), batch)
	}
}

func (w *batchWriter) commit(ctx context.Context, batch []*writeReq) {
	if len(batch) > 1 {
		updates := make([]fleetstore.SessionUpdate, len(batch))
		for i, r := range batch {
			updates[i] = r.update
		}
		err := w.store.UpdateSessions(ctx, updates)
		if !errors.Is(err, fleetstore.ErrConflict) {
			for _, r := range batch {
				r.done <- err
			}
			return
		}
		// One record moved on (its session ended meanwhile): find which.
	}
	for _, r := range batch {
		_, err := w.store.UpdateSession(ctx, r.update.Session, r.update.Revision)
		r.done <- err
	}
}
