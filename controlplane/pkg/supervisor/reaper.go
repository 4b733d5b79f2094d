package supervisor

import (
	"context"
	"errors"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// A live session always has its slot key: both are written in one
// transaction, and ending a session removes the key in the same transaction
// that ends the record. So a slot key that vanishes while its session is
// live means the worker's lease expired or was revoked: the worker is lost,
// and the session fails with reason worker_lost.

// reapLoop follows deletions under fleet/ (fleetstore's ListWatch) and
// reconciles at every listing: first, after a broken watch, and every
// ReconcileInterval.
func (s *Supervisor) reapLoop(ctx context.Context) error {
	keys := s.opts.Store.Keys()
	return s.opts.Store.ListWatch(ctx, fleetstore.ListWatchOptions{
		Prefixes: []string{keys.Fleet()},
		PrevKV:   true,
		Resync:   s.opts.ReconcileInterval,
		Name:     "reaper",
		Log:      s.log,
	}, fleetstore.HandlerFuncs{
		ReplaceFunc: func(ctx context.Context, _ []fleetstore.KV, _ int64) {
			if _, err := s.reconcile(ctx); err != nil {
				s.log.Warn("reconcile sessions", "err", err)
			}
		},
		ApplyFunc: func(ctx context.Context, events []fleetstore.Event, _ int64) {
			for _, ev := range events {
				if ev.Type == fleetstore.EventDelete && ev.Prev != nil {
					s.onDelete(ctx, keys, *ev.Prev)
				}
			}
		},
	})
}

func (s *Supervisor) onDelete(ctx context.Context, keys fleetstore.Keys, prev fleetstore.KV) {
	pk, err := keys.Parse(prev.Key)
	if err != nil {
		return
	}
	switch pk.Kind {
	case fleetstore.KindSlot:
		s.failLost(ctx, string(prev.Value), pk.Worker)
	case fleetstore.KindWorker:
		w, err := fleetstore.DecodeWorker(prev.Value)
		if err != nil {
			return
		}
		// A draining worker that deregistered announced itself; anything
		// else that vanishes was lost.
		if w.GetState() != fleetv1.WorkerState_WORKER_STATE_DRAINING {
			s.log.Warn("worker lost", "worker", pk.Worker)
			s.publish(ctx, fleetbus.WorkerEvent(fleetbus.WorkerLost, pk.Worker, w))
		}
	}
}

// failLost fails a session whose slot vanished, if it is still live.
func (s *Supervisor) failLost(ctx context.Context, sessionID, worker string) {
	sess, ended, err := s.opts.Store.EndSession(ctx, sessionID, fleetv1.SessionState_SESSION_STATE_FAILED,
		fleetv1.EndReason_END_REASON_WORKER_LOST, "worker "+worker+" was lost")
	if err != nil {
		if !errors.Is(err, fleetstore.ErrNotFound) {
			s.log.Warn("fail session of lost worker", "session", sessionID, "err", err)
		}
		return
	}
	if ended {
		s.log.Info("session failed: worker lost", "session", sessionID, "worker", worker)
		s.publish(ctx, fleetbus.SessionEvent(fleetbus.SessionFailed, sess))
	}
}

// reconcile checks every session against its slot, fails live sessions
// whose slot is gone, ends placements a crashed replica left half done, and
// deletes ended records past retention. It returns the revision it read at.
func (s *Supervisor) reconcile(ctx context.Context) (int64, error) {
	keys := s.opts.Store.Keys()
	entries, held, rev, err := s.opts.Store.SessionsAndSlots(ctx) // held: slot key → session
	if err != nil {
		return 0, err
	}
	now := time.Now()
	for _, e := range entries {
		sess := e.Session
		if fleetstore.Terminal(sess.GetState()) {
			if now.Sub(sess.GetEndedAt().AsTime()) > s.opts.Retention {
				if err := s.opts.Store.DeleteSessionRecord(ctx, sess.GetId(), e.Revision); err != nil {
					s.log.Warn("expire session record", "session", sess.GetId(), "err", err)
				}
			}
			continue
		}
		slotKey := keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())
		if held[slotKey] != sess.GetId() {
			s.failLost(ctx, sess.GetId(), sess.GetWorkerId())
			continue
		}
		// A placement whose replica died between reserving and starting
		// stays "starting"; end it so the slot is not held forever.
		if sess.GetState() == fleetv1.SessionState_SESSION_STATE_STARTING && now.Sub(sess.GetCreatedAt().AsTime()) > 2*time.Minute {
			ended, ok, err := s.opts.Store.EndSession(ctx, sess.GetId(), fleetv1.SessionState_SESSION_STATE_FAILED,
				fleetv1.EndReason_END_REASON_ERROR, "placement did not complete")
			if err == nil && ok {
				s.publish(ctx, fleetbus.SessionEvent(fleetbus.SessionFailed, ended))
			}
		}
	}
	return rev, nil
}

func (s *Supervisor) publish(ctx context.Context, e *fleetv1.Event) {
	if s.opts.Events == nil {
		return
	}
	if err := s.opts.Events.Publish(ctx, e); err != nil {
		s.log.Warn("publish event", "type", e.GetType(), "err", err)
	}
}
