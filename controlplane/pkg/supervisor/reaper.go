package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// A live session always has its slot key: both are written in one
// transaction, and ending a session removes the key in the same transaction
// that ends the record. So a slot key that vanishes while its session is
// live means the worker's lease expired or was revoked: the worker is lost,
// and the session fails with reason worker_lost.

// reapLoop follows deletions under fleet/ and reconciles periodically.
func (s *Supervisor) reapLoop(ctx context.Context) error {
	keys := s.opts.Store.Keys()
	cli := s.opts.Store.Client()
	for ctx.Err() == nil {
		// Reconcile first: it covers whatever happened before the watch.
		rev, err := s.reconcile(ctx)
		if err != nil {
			s.log.Warn("reconcile sessions", "err", err)
			if !sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		if err := s.followDeletions(ctx, cli, keys, rev); err != nil {
			s.log.Warn("reaper watch", "err", err)
		}
	}
	return nil
}

func (s *Supervisor) followDeletions(ctx context.Context, cli *clientv3.Client, keys fleetstore.Keys, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, keys.Fleet(), clientv3.WithPrefix(), clientv3.WithRev(rev+1),
		clientv3.WithFilterPut(), clientv3.WithPrevKV())
	tick := time.NewTicker(s.opts.ReconcileInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if _, err := s.reconcile(ctx); err != nil {
				s.log.Warn("reconcile sessions", "err", err)
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch deletions: %w", err)
			}
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE && ev.PrevKv != nil {
					s.onDelete(ctx, keys, ev.PrevKv)
				}
			}
		}
	}
}

func (s *Supervisor) onDelete(ctx context.Context, keys fleetstore.Keys, prev *mvccpb.KeyValue) {
	pk, err := keys.Parse(string(prev.Key))
	if err != nil {
		return
	}
	switch pk.Kind {
	case fleetstore.KindSlot:
		if s.recordNamesSlot(ctx, string(prev.Value), pk) {
			s.failLost(ctx, string(prev.Value), pk.Worker)
		}
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
	cli := s.opts.Store.Client()
	resp, err := cli.Get(ctx, keys.Sessions(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list sessions: %w", err)
	}
	rev := resp.Header.Revision
	slots, err := cli.Get(ctx, keys.Slots(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return 0, fmt.Errorf("list slots: %w", err)
	}
	held := make(map[string]string, len(slots.Kvs)) // slot key → session
	for _, kv := range slots.Kvs {
		held[string(kv.Key)] = string(kv.Value)
	}
	now := time.Now()
	for _, kv := range resp.Kvs {
		sess, err := fleetstore.DecodeSession(kv.Value)
		if err != nil {
			s.log.Warn("undecodable session record", "key", string(kv.Key), "err", err)
			continue
		}
		if fleetstore.Terminal(sess.GetState()) {
			if now.Sub(sess.GetEndedAt().AsTime()) > s.opts.Retention {
				if err := s.opts.Store.DeleteSessionRecord(ctx, sess.GetId(), kv.ModRevision); err != nil {
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

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
