// Package supervisor runs the control plane's fleet-wide duties on exactly
// one replica at a time, chosen by an etcd election: re-placing (or failing)
// the sessions of lost workers, marking workers that stop answering health
// checks down, and expiring old session records. Every change it makes is a
// guarded etcd transaction, so a deposed leader still finishing a step cannot
// do harm.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// EventPublisher publishes lifecycle events.
type EventPublisher interface {
	Publish(ctx context.Context, e *fleetv1.Event) error
}

// HealthChecker asks one worker whether it is alive.
type HealthChecker interface {
	Check(ctx context.Context, workerID string) error
}

// Options configures a Supervisor.
type Options struct {
	// LeaderDuties run while this replica leads (each until its context
	// ends; an error ends the leadership), like the event log.
	LeaderDuties []func(ctx context.Context) error

	ReplicaID string
	Store     *fleetstore.Store
	Registry  *registry.Registry
	Events    EventPublisher
	Health    HealthChecker
	Log       *slog.Logger
	// ElectionTTL is the leader's lease; a dead leader is replaced after it.
	ElectionTTL time.Duration
	// HealthInterval is the time between health rounds; HealthTimeout bounds
	// one check; a worker is down after HealthFailures failures in a row.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	HealthFailures int
	// ReconcileInterval is how often every live session is checked against
	// its slot (catching what a watch gap missed).
	ReconcileInterval time.Duration
	// Retention is how long an ended session's record is kept.
	Retention time.Duration
	// Replacer re-places sessions of lost workers; nil fails them.
	Replacer Replacer
	// ReplaceConcurrency bounds the sessions handled at once after a loss
	// (default 32).
	ReplaceConcurrency int
	// Workers dials workers for live migration (nil: no migration).
	Workers   WorkerDialer
	Migration MigrationOptions
}

func (o *Options) defaults() {
	if o.ElectionTTL == 0 {
		o.ElectionTTL = 5 * time.Second
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = time.Second
	}
	if o.HealthTimeout == 0 {
		o.HealthTimeout = 500 * time.Millisecond
	}
	if o.HealthFailures == 0 {
		o.HealthFailures = 3
	}
	if o.ReconcileInterval == 0 {
		o.ReconcileInterval = 10 * time.Second
	}
	if o.ReplaceConcurrency == 0 {
		o.ReplaceConcurrency = 32
	}
	if o.Retention == 0 {
		o.Retention = 24 * time.Hour
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Supervisor campaigns for leadership and, while leader, runs the duties.
type Supervisor struct {
	opts  Options
	log   *slog.Logger
	store reaperStore
}

// New returns a Supervisor.
func New(opts Options) *Supervisor {
	opts.defaults()
	return &Supervisor{opts: opts, log: opts.Log, store: opts.Store}
}

// Run campaigns and leads until ctx ends; after losing leadership it
// campaigns again.
func (s *Supervisor) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := s.leadOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("supervisor lost leadership or failed; campaigning again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

func (s *Supervisor) leadOnce(ctx context.Context) error {
	cli := s.opts.Store.Client()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(int(s.opts.ElectionTTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer sess.Close() // revokes the lease: the next leader need not wait
	election := concurrency.NewElection(sess, s.opts.Store.Keys().Leader())
	if err := election.Campaign(ctx, s.opts.ReplicaID); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	s.log.Info("supervisor elected leader")

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(lctx)
	g.Go(func() error {
		select {
		case <-sess.Done():
			return errors.New("leader lease lost")
		case <-gctx.Done():
			return nil
		}
	})
	for _, duty := range s.opts.LeaderDuties {
		g.Go(func() error { return duty(gctx) })
	}
	g.Go(func() error { return s.reapLoop(gctx) })
	g.Go(func() error { return s.healthLoop(gctx) })
	g.Go(func() error { return s.migrateLoop(gctx) })
	err = g.Wait()
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer rcancel()
	_ = election.Resign(rctx)
	return err
}

// IsLeader reports whether this replica's id holds the election key now.
func IsLeader(ctx context.Context, cli *clientv3.Client, keys fleetstore.Keys, replicaID string) (bool, error) {
	resp, err := cli.Get(ctx, keys.Leader(), clientv3.WithFirstCreate()...)
	if err != nil {
		return false, fmt.Errorf("read leader: %w", err)
	}
	return len(resp.Kvs) > 0 && string(resp.Kvs[0].Value) == replicaID, nil
}
