package fleetstore

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ClaimIdempotencyKey binds an idempotency key to a session id unless it is
// bound already; it returns the session id the key is bound to and whether
// this call bound it. The binding expires after ttl.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, owner, key, sessionID string, ttl time.Duration) (bound string, claimed bool, err error) {
	k := s.keys.Idempotency(owner, key)
	leaseID, err := s.GrantLease(ctx, ttl)
	if err != nil {
		return "", false, fmt.Errorf("idempotency key: %w", err)
	}
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, sessionID, clientv3.WithLease(leaseID))).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return "", false, fmt.Errorf("claim idempotency key: %w", err)
	}
	if resp.Succeeded {
		return sessionID, true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 1 && string(kvs[0].Value) == sessionID {
		// Session ids are fresh per create: only an earlier attempt of this
		// very call, whose answer was lost, can have bound it (under the
		// lease granted above, which it keeps).
		return sessionID, true, nil
	}
	// The lease is not needed; let it go without waiting for it.
	_ = s.RevokeLease(ctx, leaseID)
	if len(kvs) == 0 {
		return "", false, fmt.Errorf("claim idempotency key: %w", ErrConflict)
	}
	return string(kvs[0].Value), false, nil
}

// IdempotencyBinding reads what an idempotency key is bound to.
func (s *Store) IdempotencyBinding(ctx context.Context, owner, key string) (string, error) {
	resp, err := s.kv.Get(ctx, s.keys.Idempotency(owner, key))
	if err != nil {
		return "", fmt.Errorf("read idempotency key: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("idempotency key: %w", ErrNotFound)
	}
	return string(resp.Kvs[0].Value), nil
}

// ReleaseIdempotencyKey unbinds a key that is still bound to sessionID (the
// placement it guarded failed, so a retry may try again) and revokes the
// binding's lease, so failed placements leave no lease behind.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, owner, key, sessionID string) error {
	k := s.keys.Idempotency(owner, key)
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k), "=", sessionID)).
		Then(clientv3.OpGet(k), clientv3.OpDelete(k)).
		Commit()
	if err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	if !resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 || kvs[0].Lease == 0 {
		return nil
	}
	// The lease held only this key (one lease per claim).
	if err := s.RevokeLease(ctx, clientv3.LeaseID(kvs[0].Lease)); err != nil {
		return fmt.Errorf("idempotency key: %w", err)
	}
	return nil
}
