package fleetstore

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reads that callers outside fleetstore need: who holds a slot, which lease
// holds a worker record, and sessions with their slots at one revision.

// WorkerLease reads which lease holds a worker's record (ok false when no
// record exists).
func (s *Store) WorkerLease(ctx context.Context, id string) (lease clientv3.LeaseID, ok bool, err error) {
	resp, err := s.kv.Get(ctx, s.keys.Worker(id))
	if err != nil {
		return clientv3.NoLease, false, fmt.Errorf("read worker record %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return clientv3.NoLease, false, nil
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease), true, nil
}

// SlotOwner reads which session holds a slot now ("" when it is free). The
// read is linearizable: a slot freed before the call is seen as free.
func (s *Store) SlotOwner(ctx context.Context, worker string, gpu, slot uint32) (string, error) {
	key := s.keys.Slot(worker, gpu, slot)
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return "", fmt.Errorf("read slot %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// serializableProbe bounds SlotOwnerAt's read of the nearest member's own
// state: it answers in about a millisecond, or its member is gone.
const serializableProbe = 200 * time.Millisecond

// SlotOwnerAt is SlotOwner as of revision minRev or later. It first reads
// the state of the member the client talks to (a serializable read, which
// needs no leader: after the leader died a linearizable read waits for the
// election) and takes that answer when the member has applied minRev;
// otherwise it reads as SlotOwner does, through the leader.
func (s *Store) SlotOwnerAt(ctx context.Context, worker string, gpu, slot uint32, minRev int64) (string, error) {
	key := s.keys.Slot(worker, gpu, slot)
	pctx, cancel := context.WithTimeout(ctx, serializableProbe)
	resp, err := s.cli.Get(pctx, key, clientv3.WithSerializable())
	cancel()
	if err == nil && resp.Header.GetRevision() >= minRev {
		if len(resp.Kvs) == 0 {
			return "", nil
		}
		return string(resp.Kvs[0].Value), nil
	}
	return s.SlotOwner(ctx, worker, gpu, slot)
}

// SlotOwnerByKey is SlotOwner for a slot key.
func (s *Store) SlotOwnerByKey(ctx context.Context, key string) (string, bool, error) {
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return "", false, fmt.Errorf("read slot %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

// SlotHolders lists every slot key under the fleet at revision rev (0: now)
// with the session each holds, and the revision read at.
func (s *Store) SlotHolders(ctx context.Context, rev int64) (map[string]string, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.kv.Get(ctx, s.keys.Slots(), opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("list slots: %w", err)
	}
	held := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		held[string(kv.Key)] = string(kv.Value)
	}
	return held, resp.Header.Revision, nil
}

// SessionsAndSlots lists every session record and every slot key (with the
// session each holds) at one revision, and returns that revision: a
// session created after the slot listing cannot look slotless.
func (s *Store) SessionsAndSlots(ctx context.Context) ([]SessionEntry, map[string]string, int64, error) {
	resp, err := s.kv.Get(ctx, s.keys.Sessions(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list sessions: %w", err)
	}
	rev := resp.Header.Revision
	held, _, err := s.SlotHolders(ctx, rev)
	if err != nil {
		return nil, nil, 0, err
	}
	out := make([]SessionEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ss, err := DecodeSession(kv.Value)
		if err != nil {
			continue // not a record this version understands: left alone
		}
		out = append(out, SessionEntry{Session: ss, Revision: kv.ModRevision})
	}
	return out, held, rev, nil
}
