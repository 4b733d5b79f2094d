package fleetstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Re-placement of a session whose worker was lost. Every step is one
// transaction guarded by the session record's revision (and, where a slot is
// what the step is about, by that slot key's revision too), so a step acts
// only on the record it was decided on: a slot deletion seen late, a deposed
// leader still finishing, or a create that reused nothing cannot end or move
// a session that has moved on since.
//
//	READY ─MarkLost→ PLACING (lost_at) ─ReserveMove→ STARTING (new slot) ─UpdateSession→ READY (moves+1)
//	                    ▲                                │
//	                    └──────────────Unplace───────────┘ (the new worker refused)

// MoveReasonWorkerLost is Session.move_reason of a re-placement.
const MoveReasonWorkerLost = "worker_lost"

// SessionSlot is a session record, its revision, and what the slot key the
// record names holds.
type SessionSlot struct {
	Session  *fleetv1.Session
	Revision int64 // the record's ModRevision
	// SlotHeld says the named slot key holds this session; SlotRevision is
	// that key's ModRevision (0 when it is absent).
	SlotHeld     bool
	SlotRevision int64
}

// SessionWithSlot reads a session record and then the slot key it names.
// The slot is read after the record, so a record that still has revision
// Revision when a guarded step commits cannot have been given that slot
// since (every reservation rewrites the record).
func (s *Store) SessionWithSlot(ctx context.Context, id string) (SessionSlot, error) {
	sess, rev, err := s.Session(ctx, id)
	if err != nil {
		return SessionSlot{}, err
	}
	slotKey := s.keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())
	resp, err := s.cli.Get(ctx, slotKey)
	if err != nil {
		return SessionSlot{}, fmt.Errorf("read slot of session %s: %w", id, err)
	}
	out := SessionSlot{Session: sess, Revision: rev}
	if len(resp.Kvs) > 0 {
		out.SlotRevision = resp.Kvs[0].ModRevision
		out.SlotHeld = string(resp.Kvs[0].Value) == id
	}
	return out, nil
}

// lostGuard holds while the record and its slot key are as ss saw them.
func (s *Store) lostGuard(ss SessionSlot) []clientv3.Cmp {
	sess := ss.Session
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(s.keys.Session(sess.GetId())), "=", ss.Revision),
		clientv3.Compare(clientv3.ModRevision(s.keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())), "=", ss.SlotRevision),
	}
}

// ErrSlotHeld is returned for a lost-session step on a session whose slot
// still holds it: it is not lost.
var ErrSlotHeld = errors.New("session still holds its slot")

// MarkLost moves a live session whose slot no longer holds it to PLACING,
// with lost_at now and moved_from/move_reason naming the lost worker, if the
// record and the slot key are still as ss saw them. The owner's live mark
// stays: the session is still live. It returns the record's new revision,
// or ErrConflict when either changed.
func (s *Store) MarkLost(ctx context.Context, ss SessionSlot, now time.Time) (*fleetv1.Session, int64, error) {
	if ss.SlotHeld {
		return nil, 0, fmt.Errorf("mark session %s lost: %w", ss.Session.GetId(), ErrSlotHeld)
	}
	sess := cloneSession(ss.Session)
	failRecordingsOf(sess, sess.GetWorkerId())
	sess.State = fleetv1.SessionState_SESSION_STATE_PLACING
	sess.LostAt = timestamppb.New(now)
	sess.MovedFrom, sess.MoveReason = sess.GetWorkerId(), MoveReasonWorkerLost
	resp, err := s.cli.Txn(ctx).If(s.lostGuard(ss)...).Then(clientv3.OpPut(s.keys.Session(sess.GetId()), marshal(sess))).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("mark session %s lost: %w", sess.GetId(), err)
	}
	if !resp.Succeeded {
		return nil, 0, fmt.Errorf("mark session %s lost: %w", sess.GetId(), ErrConflict)
	}
	return sess, resp.Header.Revision, nil
}

// FailLost ends a live session whose slot no longer holds it with
// failed/worker_lost, if the record and the slot key are still as ss saw
// them (else ErrConflict).
func (s *Store) FailLost(ctx context.Context, ss SessionSlot, message string) (*fleetv1.Session, error) {
	if ss.SlotHeld {
		return nil, fmt.Errorf("fail lost session %s: %w", ss.Session.GetId(), ErrSlotHeld)
	}
	sess := cloneSession(ss.Session)
	failRecordingsOf(sess, sess.GetWorkerId())
	endRecord(sess, fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_WORKER_LOST, message)
	ops := append([]clientv3.Op{clientv3.OpPut(s.keys.Session(sess.GetId()), marshal(sess))}, s.ownerEndOps(sess)...)
	resp, err := s.cli.Txn(ctx).If(s.lostGuard(ss)...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("fail lost session %s: %w", sess.GetId(), err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("fail lost session %s: %w", sess.GetId(), ErrConflict)
	}
	return sess, nil
}

// ReserveMove takes a slot for an existing session being re-placed: the
// transaction of Reserve (slot free, worker record unchanged, neither
// drained nor down), except that the session record must be at revision rev
// instead of absent, the owner's keys are left as they are (the session
// stays live, so its quota is not counted again), and the slots the record
// named before (release, e.g. a start that failed, a migration's source) are
// freed if they still hold the session. sess is the record to write; its
// worker, GPU and slot are set from r. ok is false when a condition failed.
func (s *Store) ReserveMove(ctx context.Context, r Reservation, sess *fleetv1.Session, rev int64, release ...*fleetv1.SlotRef) (newRev int64, ok bool, err error) {
	slotKey := s.keys.Slot(r.Worker, r.GPU, r.Slot)
	sessKey := s.keys.Session(sess.GetId())
	sess.WorkerId, sess.Gpu, sess.Slot = r.Worker, r.GPU, r.Slot
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(slotKey), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.keys.Worker(r.Worker)), "=", r.WorkerRevision),
		clientv3.Compare(clientv3.CreateRevision(s.keys.Drain(r.Worker)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(s.keys.Health(r.Worker)), "=", 0),
		clientv3.Compare(clientv3.ModRevision(sessKey), "=", rev),
	}
	ops := []clientv3.Op{
		clientv3.OpPut(slotKey, sess.GetId(), clientv3.WithLease(r.WorkerLease)),
		clientv3.OpPut(sessKey, marshal(sess)),
	}
	ops = append(ops, s.releaseOps(sess.GetId(), slotKey, release)...)
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("reserve slot %s for moving %s: %w", slotKey, sess.GetId(), err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// Unplace writes a session's record (a re-placement going back to placing
// after the new worker refused it) and frees the slots in release that
// still hold the session, if the record is at rev (else ErrConflict).
func (s *Store) Unplace(ctx context.Context, sess *fleetv1.Session, rev int64, release ...*fleetv1.SlotRef) (int64, error) {
	key := s.keys.Session(sess.GetId())
	ops := append([]clientv3.Op{clientv3.OpPut(key, marshal(sess))}, s.releaseOps(sess.GetId(), "", release)...)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("unplace session %s: %w", sess.GetId(), err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("unplace session %s: %w", sess.GetId(), ErrConflict)
	}
	return resp.Header.Revision, nil
}

// EndSessionAt ends a live session with a terminal state and reason if its
// record is still at rev (else ErrConflict): unlike EndSession it never
// re-reads, so it acts only on the record the caller decided on. The slot
// the record names (and a migration's source) is freed if it still holds
// the session, and the owner's live mark goes.
func (s *Store) EndSessionAt(ctx context.Context, sess *fleetv1.Session, rev int64, state fleetv1.SessionState, reason fleetv1.EndReason, message string) (*fleetv1.Session, error) {
	if !Terminal(state) {
		return nil, fmt.Errorf("end session %s: state %s is not terminal", sess.GetId(), state)
	}
	ended := cloneSession(sess)
	endRecord(ended, state, reason, message)
	key := s.keys.Session(sess.GetId())
	ops := append([]clientv3.Op{clientv3.OpPut(key, marshal(ended))},
		s.releaseOps(sess.GetId(), "", []*fleetv1.SlotRef{slotOf(sess), sess.GetMigratingFrom()})...)
	ops = append(ops, s.ownerEndOps(ended)...)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("end session %s: %w", sess.GetId(), err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("end session %s at revision %d: %w", sess.GetId(), rev, ErrConflict)
	}
	return ended, nil
}

// SlotOf names the slot a session record is placed on.
func SlotOf(sess *fleetv1.Session) *fleetv1.SlotRef { return slotOf(sess) }

func slotOf(sess *fleetv1.Session) *fleetv1.SlotRef {
	return &fleetv1.SlotRef{WorkerId: sess.GetWorkerId(), Gpu: sess.GetGpu(), Slot: sess.GetSlot()}
}

// releaseOps frees each named slot that still holds session id, skipping
// except (a key the same transaction writes) and duplicates: etcd refuses a
// transaction that touches one key twice.
func (s *Store) releaseOps(id, except string, refs []*fleetv1.SlotRef) []clientv3.Op {
	seen := map[string]bool{except: true}
	var ops []clientv3.Op
	for _, ref := range refs {
		if ref == nil || ref.GetWorkerId() == "" {
			continue
		}
		key := s.keys.Slot(ref.GetWorkerId(), ref.GetGpu(), ref.GetSlot())
		if seen[key] {
			continue
		}
		seen[key] = true
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", id)},
			[]clientv3.Op{clientv3.OpDelete(key)}, nil))
	}
	return ops
}

func endRecord(sess *fleetv1.Session, state fleetv1.SessionState, reason fleetv1.EndReason, message string) {
	sess.State, sess.EndReason, sess.EndMessage = state, reason, message
	sess.EndedAt = timestamppb.Now()
	sess.LostAt = nil
}

func cloneSession(sess *fleetv1.Session) *fleetv1.Session {
	return proto.Clone(sess).(*fleetv1.Session)
}
