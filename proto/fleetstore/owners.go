package fleetstore

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Per-owner keys. Every session record with an owner has an index entry,
// owners/<owner>/sessions/<id>, written in the reservation transaction and
// deleted with the record (Unreserve, DeleteSessionRecord): an owner's
// sessions are listed by a range read of its index, never a fleet scan.
// While a session is live (placing, starting, ready) it also has a live
// mark, owners/<owner>/live/<id>, deleted in the transaction that ends it.
// The quota counts live marks: Reserve reads their count at revision R and
// commits only if no mark of the owner was written after R, so replicas
// racing for one owner's last free place cannot both win.

// maxQuotaRetries bounds how often Reserve counts again after another
// session of the same owner changed the count under it.
const maxQuotaRetries = 16

// ownerPutOps writes a new session's index entry and live mark.
func (s *Store) ownerPutOps(sess *fleetv1.Session) []clientv3.Op {
	o := sess.GetOwner()
	if o == "" || !ValidName(o) {
		return nil
	}
	return []clientv3.Op{
		clientv3.OpPut(s.keys.OwnerSession(o, sess.GetId()), ""),
		clientv3.OpPut(s.keys.OwnerLiveSession(o, sess.GetId()), ""),
	}
}

// ownerEndOps deletes the live mark of a session that ends.
func (s *Store) ownerEndOps(sess *fleetv1.Session) []clientv3.Op {
	o := sess.GetOwner()
	if o == "" || !ValidName(o) {
		return nil
	}
	return []clientv3.Op{clientv3.OpDelete(s.keys.OwnerLiveSession(o, sess.GetId()))}
}

// ownerDeleteOps deletes both per-owner keys of a session record that goes.
func (s *Store) ownerDeleteOps(sess *fleetv1.Session) []clientv3.Op {
	o := sess.GetOwner()
	if o == "" || !ValidName(o) {
		return nil
	}
	return []clientv3.Op{
		clientv3.OpDelete(s.keys.OwnerSession(o, sess.GetId())),
		clientv3.OpDelete(s.keys.OwnerLiveSession(o, sess.GetId())),
	}
}

// ownerQuotaCmp counts the owner's live sessions; at the limit it fails with
// ErrQuotaExceeded, else it returns the guard that holds while no live mark
// of the owner was written after the count (and the count's revision).
func (s *Store) ownerQuotaCmp(ctx context.Context, owner string, limit int) (clientv3.Cmp, int64, error) {
	if owner == "" || !ValidName(owner) {
		return clientv3.Cmp{}, 0, fmt.Errorf("quota of owner %q: %w", owner, ErrQuotaExceeded)
	}
	prefix := s.keys.OwnerLive(owner)
	resp, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return clientv3.Cmp{}, 0, fmt.Errorf("count live sessions of %s: %w", owner, err)
	}
	if resp.Count >= int64(limit) {
		return clientv3.Cmp{}, 0, fmt.Errorf("%d live sessions of %s (limit %d): %w", resp.Count, owner, limit, ErrQuotaExceeded)
	}
	rev := resp.Header.Revision
	// Over a range, the comparison must hold for every key in it (an empty
	// range compares a zero revision). A mark deleted since only lowers
	// the count, so deletions need no guard.
	return clientv3.Compare(clientv3.ModRevision(prefix), "<", rev+1).WithPrefix(), rev, nil
}

// ownerLiveChangedSince reports whether a live mark of owner was written
// after rev (the quota guard of a reservation failed).
func (s *Store) ownerLiveChangedSince(ctx context.Context, owner string, rev int64) (bool, error) {
	resp, err := s.kv.Get(ctx, s.keys.OwnerLive(owner), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return false, fmt.Errorf("read live sessions of %s: %w", owner, err)
	}
	return len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision > rev, nil
}

// LiveSessions counts the owner's live sessions (what the quota counts).
func (s *Store) LiveSessions(ctx context.Context, owner string) (int64, error) {
	resp, err := s.kv.Get(ctx, s.keys.OwnerLive(owner), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count live sessions of %s: %w", owner, err)
	}
	return resp.Count, nil
}

// SessionPage is one page of session records, in session id order.
type SessionPage struct {
	Sessions []SessionEntry
	// Last is the id of the last index entry read (the cursor to go on
	// after); More says whether entries follow it.
	Last string
	More bool
}

// maxTxnGets keeps record reads under etcd's default of 128 operations per
// transaction.
const maxTxnGets = 100

// OwnerSessionsPage reads up to limit session records of owner whose ids
// sort after after ("" = from the start), from the owner's index.
func (s *Store) OwnerSessionsPage(ctx context.Context, owner, after string, limit int) (SessionPage, error) {
	if limit <= 0 {
		return SessionPage{}, fmt.Errorf("list sessions of %s: limit %d", owner, limit)
	}
	prefix := s.keys.OwnerSessions(owner)
	idx, err := s.kv.Get(ctx, rangeStart(prefix, after), clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)),
		clientv3.WithLimit(int64(limit)), clientv3.WithKeysOnly())
	if err != nil {
		return SessionPage{}, fmt.Errorf("list sessions of %s: %w", owner, err)
	}
	page := SessionPage{More: idx.More}
	ids := make([]string, len(idx.Kvs))
	for i, kv := range idx.Kvs {
		ids[i] = string(kv.Key[len(prefix):])
	}
	if len(ids) > 0 {
		page.Last = ids[len(ids)-1]
	}
	// Records of one page from one revision: the index's.
	for start := 0; start < len(ids); start += maxTxnGets {
		chunk := ids[start:min(start+maxTxnGets, len(ids))]
		ops := make([]clientv3.Op, len(chunk))
		for i, id := range chunk {
			ops[i] = clientv3.OpGet(s.keys.Session(id), clientv3.WithRev(idx.Header.Revision))
		}
		resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return SessionPage{}, fmt.Errorf("read sessions of %s: %w", owner, err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().GetKvs() {
				ss, err := DecodeSession(kv.Value)
				if err != nil {
					return SessionPage{}, fmt.Errorf("session key %s: %w", kv.Key, err)
				}
				page.Sessions = append(page.Sessions, SessionEntry{Session: ss, Revision: kv.ModRevision})
			}
		}
	}
	return page, nil
}

// SessionsPage reads up to limit session records of the whole fleet whose
// ids sort after after ("" = from the start): a paginated range read.
func (s *Store) SessionsPage(ctx context.Context, after string, limit int) (SessionPage, error) {
	if limit <= 0 {
		return SessionPage{}, fmt.Errorf("list sessions: limit %d", limit)
	}
	prefix := s.keys.Sessions()
	resp, err := s.kv.Get(ctx, rangeStart(prefix, after), clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)),
		clientv3.WithLimit(int64(limit)))
	if err != nil {
		return SessionPage{}, fmt.Errorf("list sessions: %w", err)
	}
	page := SessionPage{More: resp.More}
	for _, kv := range resp.Kvs {
		page.Last = string(kv.Key[len(prefix):])
		ss, err := DecodeSession(kv.Value)
		if err != nil {
			return SessionPage{}, fmt.Errorf("session key %s: %w", kv.Key, err)
		}
		page.Sessions = append(page.Sessions, SessionEntry{Session: ss, Revision: kv.ModRevision})
	}
	return page, nil
}

// rangeStart is the first key of a prefix after the key named after: the
// smallest key greater than prefix+after.
func rangeStart(prefix, after string) string {
	if after == "" {
		return prefix
	}
	return prefix + after + "\x00"
}
