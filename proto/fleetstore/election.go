package fleetstore

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leadership is a won election of the control plane's supervisor: etcd's
// concurrency.Election over a session lease. Done closes when the lease is
// lost (the leader must stop leading); Resign hands the office on at once.
type Leadership struct {
	sess     *concurrency.Session
	election *concurrency.Election
}

// Campaign waits until replicaID is elected leader (Keys.Leader), with a
// session lease of ttl that lives as long as life; ctx bounds the wait.
func (s *Store) Campaign(ctx, life context.Context, replicaID string, ttl time.Duration) (*Leadership, error) {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(max(1, int(ttl/time.Second))), concurrency.WithContext(life))
	if err != nil {
		return nil, fmt.Errorf("election session: %w", err)
	}
	election := concurrency.NewElection(sess, s.keys.Leader())
	if err := election.Campaign(ctx, replicaID); err != nil {
		_ = sess.Close()
		return nil, fmt.Errorf("campaign: %w", err)
	}
	return &Leadership{sess: sess, election: election}, nil
}

// Done is closed when the leadership's lease is lost.
func (l *Leadership) Done() <-chan struct{} { return l.sess.Done() }

// Resign gives up the office and revokes the lease, so the next leader
// need not wait for it to expire.
func (l *Leadership) Resign(ctx context.Context) {
	_ = l.election.Resign(ctx)
	_ = l.sess.Close()
}

// IsLeader reports whether replicaID holds the election key now.
func (s *Store) IsLeader(ctx context.Context, replicaID string) (bool, error) {
	resp, err := s.kv.Get(ctx, s.keys.Leader(), clientv3.WithFirstCreate()...)
	if err != nil {
		return false, fmt.Errorf("read leader: %w", err)
	}
	return len(resp.Kvs) > 0 && string(resp.Kvs[0].Value) == replicaID, nil
}

// Ping reads one key under the fleet's prefix (readiness probes: with etcd
// auth on, a control plane's role covers nothing else).
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.cli.Get(ctx, s.keys.Config("health-probe"), clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	return nil
}

// DeleteConfig deletes a config entry; deleted says whether it existed.
func (s *Store) DeleteConfig(ctx context.Context, name string) (deleted bool, err error) {
	resp, err := s.kv.Delete(ctx, s.keys.Config(name))
	if err != nil {
		return false, fmt.Errorf("delete config %s: %w", name, err)
	}
	return resp.Deleted > 0, nil
}
