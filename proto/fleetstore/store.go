package fleetstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// ErrNotFound is returned for a record that does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a guarded transaction lost a race.
var ErrConflict = errors.New("conflict")

// ErrQuotaExceeded is returned by Reserve when the session's owner already
// holds its limit of live sessions.
var ErrQuotaExceeded = errors.New("owner's live-session quota exceeded")

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

// ValidName reports whether s may be used as a worker id, avatar or voice
// name: it becomes part of etcd keys and NATS subjects, so no '/', '*', '>'.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// Store reads and changes the fleet's records in etcd. It is the only code
// of the fleet that talks to etcd: callers get its methods (records, leases,
// the election, list-and-watch), never the client.
type Store struct {
	cli       *clientv3.Client
	kv        retryKV
	keys      Keys
	retryOpts RetryOptions
}

// Option tunes a Store.
type Option func(*Store)

// WithRetry sets how requests ride out a leader change (retry.go).
func WithRetry(o RetryOptions) Option { return func(s *Store) { s.retryOpts = o } }

// New returns a Store over cli with the given key layout.
func New(cli *clientv3.Client, keys Keys, opts ...Option) *Store {
	s := &Store{cli: cli, keys: keys}
	for _, o := range opts {
		o(s)
	}
	s.retryOpts.defaults()
	s.kv = retryKV{s: s}
	return s
}

// Keys is the store's key layout.
func (s *Store) Keys() Keys { return s.keys }

// Terminal reports whether a session state is final.
func Terminal(st fleetv1.SessionState) bool {
	return st == fleetv1.SessionState_SESSION_STATE_ENDED || st == fleetv1.SessionState_SESSION_STATE_FAILED
}

func marshal(m proto.Message) string {
	b, err := proto.Marshal(m)
	if err != nil {
		// Marshal of a well-formed generated message cannot fail.
		panic(fmt.Sprintf("marshal %T: %v", m, err))
	}
	return string(b)
}

// DecodeWorker decodes a worker record.
func DecodeWorker(b []byte) (*fleetv1.Worker, error) {
	w := &fleetv1.Worker{}
	if err := proto.Unmarshal(b, w); err != nil {
		return nil, fmt.Errorf("decode worker record: %w", err)
	}
	return w, nil
}

// DecodeSession decodes a session record.
func DecodeSession(b []byte) (*fleetv1.Session, error) {
	ss := &fleetv1.Session{}
	if err := proto.Unmarshal(b, ss); err != nil {
		return nil, fmt.Errorf("decode session record: %w", err)
	}
	return ss, nil
}

// PutWorker writes a worker's record under its lease.
func (s *Store) PutWorker(ctx context.Context, w *fleetv1.Worker, lease clientv3.LeaseID) error {
	if _, err := s.kv.Put(ctx, s.keys.Worker(w.GetId()), marshal(w), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("put worker %s: %w", w.GetId(), err)
	}
	return nil
}

// Worker reads one worker record.
func (s *Store) Worker(ctx context.Context, id string) (*fleetv1.Worker, error) {
	resp, err := s.kv.Get(ctx, s.keys.Worker(id))
	if err != nil {
		return nil, fmt.Errorf("get worker %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("worker %s: %w", id, ErrNotFound)
	}
	return DecodeWorker(resp.Kvs[0].Value)
}

// SetDrained marks a worker drained (or not) by an admin. The mark has no
// lease: it outlives a restart of the worker until someone undrains it.
func (s *Store) SetDrained(ctx context.Context, worker string, drained bool) error {
	var err error
	if drained {
		_, err = s.kv.Put(ctx, s.keys.Drain(worker), "")
	} else {
		_, err = s.kv.Delete(ctx, s.keys.Drain(worker))
	}
	if err != nil {
		return fmt.Errorf("set drained=%v on %s: %w", drained, worker, err)
	}
	return nil
}

// SetDown marks a worker down (or up) after health checks. The mark is tied
// to the worker's lease so it vanishes with the worker.
func (s *Store) SetDown(ctx context.Context, worker string, lease clientv3.LeaseID, down bool) error {
	key := s.keys.Health(worker)
	if !down {
		if _, err := s.kv.Delete(ctx, key); err != nil {
			return fmt.Errorf("clear down mark on %s: %w", worker, err)
		}
		return nil
	}
	// Only while the worker record still exists under that lease: a put with
	// a dead lease fails, and a put after the worker is gone would leak.
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(s.keys.Worker(worker)), "=", int64(lease))).
		Then(clientv3.OpPut(key, "down", clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return fmt.Errorf("mark %s down: %w", worker, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("mark %s down: %w", worker, ErrNotFound)
	}
	return nil
}

// Reservation names one slot on one GPU of a worker, as seen in a cache at
// the worker record's revision.
type Reservation struct {
	Worker      string
	WorkerLease clientv3.LeaseID
	// WorkerRevision is the ModRevision of the worker record the caller saw;
	// the reservation fails if the record changed since (e.g. it drains).
	WorkerRevision int64
	GPU            uint32
	Slot           uint32
	// OwnerLimit, when > 0, is the most live sessions the session's owner
	// may hold: the reservation fails with ErrQuotaExceeded at the limit.
	OwnerLimit int
}

// Reserve atomically takes a slot for a new session and writes the session
// record, in one transaction that commits only if the slot is free, the
// worker record is unchanged and neither drained nor down, the session id is
// unused and, when r.OwnerLimit > 0, the owner has fewer live sessions than
// that (else ErrQuotaExceeded). The same transaction writes the owner's index
// entry and live mark (owners.go). The slot key carries the worker's lease,
// so it vanishes with the worker. ok is false when a condition failed (the
// caller tries elsewhere); rev is the session record's revision when it
// succeeded.
func (s *Store) Reserve(ctx context.Context, r Reservation, sess *fleetv1.Session) (rev int64, ok bool, err error) {
	slotKey := s.keys.Slot(r.Worker, r.GPU, r.Slot)
	sessKey := s.keys.Session(sess.GetId())
	sess.WorkerId, sess.Gpu, sess.Slot = r.Worker, r.GPU, r.Slot
	for attempt := 0; ; attempt++ {
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(slotKey), "=", 0),
			clientv3.Compare(clientv3.ModRevision(s.keys.Worker(r.Worker)), "=", r.WorkerRevision),
			clientv3.Compare(clientv3.CreateRevision(s.keys.Drain(r.Worker)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(s.keys.Health(r.Worker)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(sessKey), "=", 0),
		}
		var quotaRev int64
		if r.OwnerLimit > 0 {
			quotaCmp, seen, err := s.ownerQuotaCmp(ctx, sess.GetOwner(), r.OwnerLimit)
			if err != nil {
				return 0, false, fmt.Errorf("reserve slot %s for %s: %w", slotKey, sess.GetId(), err)
			}
			cmps, quotaRev = append(cmps, quotaCmp), seen
		}
		ops := append([]clientv3.Op{
			clientv3.OpPut(slotKey, sess.GetId(), clientv3.WithLease(r.WorkerLease)),
			clientv3.OpPut(sessKey, marshal(sess)),
		}, s.ownerPutOps(sess)...)
		resp, uncertain, err := s.kv.Txn(ctx).If(cmps...).Then(ops...).CommitOutcome()
		if err != nil {
			return 0, false, fmt.Errorf("reserve slot %s for %s: %w", slotKey, sess.GetId(), err)
		}
		if !resp.Succeeded && uncertain {
			// An attempt that timed out may have committed: then the slot
			// and the record are ours, and that is a success.
			if rev, mine, err := s.reservedBy(ctx, r, sess); err != nil {
				return 0, false, fmt.Errorf("reserve slot %s for %s: %w", slotKey, sess.GetId(), err)
			} else if mine {
				return rev, true, nil
			}
		}
		if resp.Succeeded || r.OwnerLimit <= 0 || attempt >= maxQuotaRetries {
			return resp.Header.Revision, resp.Succeeded, nil
		}
		// Did the quota guard fail (a session of this owner started or
		// ended since the count)? Then count again; else the slot is lost.
		changed, err := s.ownerLiveChangedSince(ctx, sess.GetOwner(), quotaRev)
		if err != nil {
			return 0, false, fmt.Errorf("reserve slot %s for %s: %w", slotKey, sess.GetId(), err)
		}
		if !changed {
			return resp.Header.Revision, false, nil
		}
	}
}

// reservedBy reports whether sess's own reservation of r is in etcd (an
// attempt whose outcome was unknown committed): the slot key names the
// session, and the record names this worker, GPU and slot with the same
// creation time. rev is the record's ModRevision.
func (s *Store) reservedBy(ctx context.Context, r Reservation, sess *fleetv1.Session) (int64, bool, error) {
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(s.keys.Slot(r.Worker, r.GPU, r.Slot)),
		clientv3.OpGet(s.keys.Session(sess.GetId())),
	).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("read back reservation: %w", err)
	}
	slot := resp.Responses[0].GetResponseRange().GetKvs()
	rec := resp.Responses[1].GetResponseRange().GetKvs()
	if len(slot) != 1 || string(slot[0].Value) != sess.GetId() || len(rec) != 1 {
		return 0, false, nil
	}
	got, err := DecodeSession(rec[0].Value)
	if err != nil {
		return 0, false, err
	}
	return rec[0].ModRevision, proto.Equal(got, sess), nil
}

// Session reads one session record and its ModRevision.
func (s *Store) Session(ctx context.Context, id string) (*fleetv1.Session, int64, error) {
	resp, err := s.kv.Get(ctx, s.keys.Session(id))
	if err != nil {
		return nil, 0, fmt.Errorf("get session %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	ss, err := DecodeSession(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return ss, resp.Kvs[0].ModRevision, nil
}

// SessionEntry is a session record with its ModRevision.
type SessionEntry struct {
	Session  *fleetv1.Session
	Revision int64
}

// Sessions lists every session record.
func (s *Store) Sessions(ctx context.Context) ([]SessionEntry, error) {
	resp, err := s.kv.Get(ctx, s.keys.Sessions(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	out := make([]SessionEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ss, err := DecodeSession(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("session key %s: %w", kv.Key, err)
		}
		out = append(out, SessionEntry{Session: ss, Revision: kv.ModRevision})
	}
	return out, nil
}

// UpdateSession writes a changed session record if it is still at revision
// rev; it returns the new revision, or ErrConflict.
func (s *Store) UpdateSession(ctx context.Context, sess *fleetv1.Session, rev int64) (int64, error) {
	key := s.keys.Session(sess.GetId())
	resp, uncertain, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, marshal(sess))).
		Else(clientv3.OpGet(key)).
		CommitOutcome()
	if err != nil {
		return 0, fmt.Errorf("update session %s: %w", sess.GetId(), err)
	}
	if !resp.Succeeded && uncertain {
		// Our own earlier attempt may be what moved the record on.
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
			if got, err := DecodeSession(kvs[0].Value); err == nil && proto.Equal(got, sess) {
				return kvs[0].ModRevision, nil
			}
		}
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("update session %s at revision %d: %w", sess.GetId(), rev, ErrConflict)
	}
	return resp.Header.Revision, nil
}

// SessionUpdate is a changed session record and the revision it must still
// be at.
type SessionUpdate struct {
	Session  *fleetv1.Session
	Revision int64
}

// UpdateSessions writes several changed records in one transaction that
// commits only if every record is still at its revision; otherwise nothing
// is written and the error is ErrConflict (the caller retries one by one).
func (s *Store) UpdateSessions(ctx context.Context, updates []SessionUpdate) error {
	cmps := make([]clientv3.Cmp, len(updates))
	puts := make([]clientv3.Op, len(updates))
	for i, u := range updates {
		key := s.keys.Session(u.Session.GetId())
		cmps[i] = clientv3.Compare(clientv3.ModRevision(key), "=", u.Revision)
		puts[i] = clientv3.OpPut(key, marshal(u.Session))
	}
	resp, err := s.kv.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return fmt.Errorf("update %d sessions: %w", len(updates), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("update %d sessions: %w", len(updates), ErrConflict)
	}
	return nil
}

// EndSession moves a live session to a terminal state with a reason and
// frees its slot, in one transaction guarded by the record's revision, so of
// all the parties that try to end one session exactly one succeeds. ended is
// true for that one; the others get ended=false and the record as it is.
func (s *Store) EndSession(ctx context.Context, id string, state fleetv1.SessionState, reason fleetv1.EndReason, message string) (sess *fleetv1.Session, ended bool, err error) {
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
		cur.State, cur.EndReason, cur.EndMessage = state, reason, message
		cur.EndedAt = timestamppb.Now()
		key := s.keys.Session(id)
		resp, uncertain, err := s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(append([]clientv3.Op{
				clientv3.OpPut(key, marshal(cur)),
				s.releaseSlotOp(cur),
				s.clearSpeechOp(id),
			}, append(s.ownerEndOps(cur), s.migrationSourceOps(cur)...)...)...).
			Else(clientv3.OpGet(key)).
			CommitOutcome()
		if err != nil {
			return nil, false, fmt.Errorf("end session %s: %w", id, err)
		}
		if resp.Succeeded {
			return cur, true, nil
		}
		if uncertain {
			// An attempt that timed out may have ended it: ours then.
			if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
				if got, err := DecodeSession(kvs[0].Value); err == nil && proto.Equal(got, cur) {
					return cur, true, nil
				}
			}
		}
		// Someone changed the record in between: read it again.
	}
}

// releaseSlotOp deletes the session's slot key, but only if it still holds
// this session (a slot is never freed on behalf of another session).
func (s *Store) releaseSlotOp(sess *fleetv1.Session) clientv3.Op {
	slotKey := s.keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())
	return clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(slotKey), "=", sess.GetId())},
		[]clientv3.Op{clientv3.OpDelete(slotKey)},
		nil,
	)
}

// Unreserve undoes a reservation that never started: the session record and
// its slot go, as if the placement had not happened. It fails with
// ErrConflict if the record changed since rev.
func (s *Store) Unreserve(ctx context.Context, sess *fleetv1.Session, rev int64) error {
	key := s.keys.Session(sess.GetId())
	resp, uncertain, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(append([]clientv3.Op{clientv3.OpDelete(key), s.releaseSlotOp(sess), s.clearSpeechOp(sess.GetId())}, s.ownerDeleteOps(sess)...)...).
		Else(clientv3.OpGet(key)).
		CommitOutcome()
	if err != nil {
		return fmt.Errorf("unreserve session %s: %w", sess.GetId(), err)
	}
	if !resp.Succeeded && uncertain && len(resp.Responses[0].GetResponseRange().GetKvs()) == 0 {
		return nil // an attempt that timed out removed it
	}
	if !resp.Succeeded {
		return fmt.Errorf("unreserve session %s: %w", sess.GetId(), ErrConflict)
	}
	return nil
}

// DeleteSessionRecord removes an ended session's record (retention expiry)
// and its entry in the owner's index, if the record is still at rev.
func (s *Store) DeleteSessionRecord(ctx context.Context, id string, rev int64) error {
	key := s.keys.Session(id)
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("delete session record %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != rev {
		return nil // gone already, or changed: the caller looks again later
	}
	sess, err := DecodeSession(resp.Kvs[0].Value)
	if err != nil {
		return fmt.Errorf("delete session record %s: %w", id, err)
	}
	_, err = s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(append([]clientv3.Op{clientv3.OpDelete(key), s.clearSpeechOp(id)}, s.ownerDeleteOps(sess)...)...).
		Commit()
	if err != nil {
		return fmt.Errorf("delete session record %s: %w", id, err)
	}
	return nil
}
