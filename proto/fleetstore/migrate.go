package fleetstore

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Live migration moves a READY session from its worker (the source) to
// another (the target) in three guarded steps, so that at every revision the
// record names exactly the slot whose worker will serve the session from
// then on, and the source keeps serving until viewers have switched:
//
//	BeginMigration:  target slot reserved; record READY on the target with
//	                 migrating_from = source slot (source slot key kept)
//	FinishMigration: source slot key deleted (its worker stops the session);
//	                 migrating_from cleared
//	AbortMigration:  record back on the source; target slot released
//
// A reaper that sees the source slot vanish finds a record that names the
// target, so it never takes step two for a lost worker.

// DrainMigrate is the value of a drain mark that also asks the control
// plane to move the worker's live sessions elsewhere (an empty value only
// stops new placements).
const DrainMigrate = "migrate"

// MoveReasonDrain is the move_reason of a session migrated off a draining
// worker.
const MoveReasonDrain = "drain"

// SetDrainMark marks a worker drained by an admin, with the wish that its
// live sessions migrate when migrate is true. Like SetDrained(true), the
// mark has no lease.
func (s *Store) SetDrainMark(ctx context.Context, worker string, migrate bool) error {
	val := ""
	if migrate {
		val = DrainMigrate
	}
	if _, err := s.cli.Put(ctx, s.keys.Drain(worker), val); err != nil {
		return fmt.Errorf("set drain mark (migrate=%v) on %s: %w", migrate, worker, err)
	}
	return nil
}

// WorkerSessionIDs lists the sessions whose slot keys a worker holds.
func (s *Store) WorkerSessionIDs(ctx context.Context, worker string) ([]string, error) {
	resp, err := s.cli.Get(ctx, s.keys.WorkerSlots(worker), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list slots of %s: %w", worker, err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Value))
	}
	return out, nil
}

// BeginMigration moves a READY session record, still at revision rev, onto
// the target slot: in one transaction that commits only if the record is
// unchanged, the session still holds its source slot, and the target slot
// is free on a worker whose record is unchanged and neither drained nor down
// (the conditions of Reserve). The record becomes READY on the target with
// migrating_from = the source slot, moves+1, moved_from, move_reason and
// placed_at; the source slot key stays, so the source keeps serving. It
// returns the moved record and its revision; ok is false when a condition
// failed.
func (s *Store) BeginMigration(ctx context.Context, sess *fleetv1.Session, rev int64, target Reservation, reason string) (moved *fleetv1.Session, newRev int64, ok bool, err error) {
	if sess.GetMigratingFrom() != nil {
		return nil, 0, false, fmt.Errorf("begin migration of %s: already migrating", sess.GetId())
	}
	if target.Worker == sess.GetWorkerId() {
		return nil, 0, false, fmt.Errorf("begin migration of %s: target is its own worker %s", sess.GetId(), target.Worker)
	}
	srcSlot := s.keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())
	dstSlot := s.keys.Slot(target.Worker, target.GPU, target.Slot)
	key := s.keys.Session(sess.GetId())
	moved = proto.CloneOf(sess)
	moved.MigratingFrom = &fleetv1.SlotRef{WorkerId: sess.GetWorkerId(), Gpu: sess.GetGpu(), Slot: sess.GetSlot()}
	moved.WorkerId, moved.Gpu, moved.Slot = target.Worker, target.GPU, target.Slot
	moved.State = fleetv1.SessionState_SESSION_STATE_READY
	moved.Moves++
	moved.MovedFrom, moved.MoveReason = sess.GetWorkerId(), reason
	moved.PlacedAt = timestamppb.Now()
	resp, err := s.cli.Txn(ctx).
		If(
			clientv3.Compare(clientv3.ModRevision(key), "=", rev),
			clientv3.Compare(clientv3.Value(srcSlot), "=", sess.GetId()),
			clientv3.Compare(clientv3.CreateRevision(dstSlot), "=", 0),
			clientv3.Compare(clientv3.ModRevision(s.keys.Worker(target.Worker)), "=", target.WorkerRevision),
			clientv3.Compare(clientv3.CreateRevision(s.keys.Drain(target.Worker)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.keys.Health(target.Worker)), "=", 0),
		).
		Then(
			clientv3.OpPut(dstSlot, sess.GetId(), clientv3.WithLease(target.WorkerLease)),
			clientv3.OpPut(key, marshal(moved)),
		).
		Commit()
	if err != nil {
		return nil, 0, false, fmt.Errorf("begin migration of %s to %s: %w", sess.GetId(), dstSlot, err)
	}
	if !resp.Succeeded {
		return nil, 0, false, nil
	}
	return moved, resp.Header.Revision, true, nil
}

// FinishMigration ends a migration whose target serves: the source slot key
// goes (only if it still holds the session; its worker's slot watch then
// stops the session there) and migrating_from is cleared, in one
// transaction guarded by the record's revision (ErrConflict if it changed).
func (s *Store) FinishMigration(ctx context.Context, moved *fleetv1.Session, rev int64) (*fleetv1.Session, int64, error) {
	src := moved.GetMigratingFrom()
	if src == nil {
		return nil, 0, fmt.Errorf("finish migration of %s: not migrating", moved.GetId())
	}
	done := proto.CloneOf(moved)
	done.MigratingFrom = nil
	key := s.keys.Session(moved.GetId())
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(append([]clientv3.Op{clientv3.OpPut(key, marshal(done))}, s.migrationSourceOps(moved)...)...).
		Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("finish migration of %s: %w", moved.GetId(), err)
	}
	if !resp.Succeeded {
		return nil, 0, fmt.Errorf("finish migration of %s at revision %d: %w", moved.GetId(), rev, ErrConflict)
	}
	return done, resp.Header.Revision, nil
}

// AbortMigration puts a migrating record (at revision rev) back as it was
// before BeginMigration (orig) and releases the target slot, if it still
// holds the session. ErrConflict if the record changed.
func (s *Store) AbortMigration(ctx context.Context, orig, moved *fleetv1.Session, rev int64) (int64, error) {
	key := s.keys.Session(moved.GetId())
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, marshal(orig)), s.releaseSlotOp(moved)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("abort migration of %s: %w", moved.GetId(), err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("abort migration of %s at revision %d: %w", moved.GetId(), rev, ErrConflict)
	}
	return resp.Header.Revision, nil
}

// migrationSourceOps delete the slot a migration is moving the session
// off, if it still holds the session (none when the session is not
// migrating): an end or a finished migration frees both slots.
func (s *Store) migrationSourceOps(sess *fleetv1.Session) []clientv3.Op {
	src := sess.GetMigratingFrom()
	if src == nil {
		return nil
	}
	slotKey := s.keys.Slot(src.GetWorkerId(), src.GetGpu(), src.GetSlot())
	return []clientv3.Op{clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(slotKey), "=", sess.GetId())},
		[]clientv3.Op{clientv3.OpDelete(slotKey)},
		nil,
	)}
}

// EndSessionOn is EndSession on behalf of the worker that runs the session:
// it ends the record only while the record names that worker. A session
// that moved on is not the worker's to end: when a migration is taking it
// off that worker (migrating_from names it), the worker lets go of its
// slot instead, as FinishMigration does, and the target serves on; when it
// runs elsewhere, nothing changes. ended is true only for an end this call
// wrote.
func (s *Store) EndSessionOn(ctx context.Context, worker, id string, state fleetv1.SessionState, reason fleetv1.EndReason, message string) (sess *fleetv1.Session, ended bool, err error) {
	if !Terminal(state) {
		return nil, false, fmt.Errorf("end session %s: state %s is not terminal", id, state)
	}
	for {
		cur, rev, err := s.Session(ctx, id)
		if err != nil {
			return nil, false, err
		}
		if Terminal(cur.GetState()) {
			return cur, false, nil
		}
		if cur.GetWorkerId() != worker {
			if src := cur.GetMigratingFrom(); src == nil || src.GetWorkerId() != worker {
				return cur, false, nil
			}
			if _, _, err := s.FinishMigration(ctx, cur, rev); errors.Is(err, ErrConflict) {
				continue
			} else if err != nil {
				return nil, false, err
			}
			return cur, false, nil
		}
		done := proto.CloneOf(cur)
		done.State, done.EndReason, done.EndMessage = state, reason, message
		done.EndedAt = timestamppb.Now()
		key := s.keys.Session(id)
		ops := append([]clientv3.Op{clientv3.OpPut(key, marshal(done)), s.releaseSlotOp(done)},
			append(s.ownerEndOps(done), s.migrationSourceOps(done)...)...)
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(ops...).Commit()
		if err != nil {
			return nil, false, fmt.Errorf("end session %s: %w", id, err)
		}
		if resp.Succeeded {
			return done, true, nil
		}
		// Changed in between (a migration began, someone ended it): again.
	}
}
