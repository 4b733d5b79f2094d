// Package supervisor runs the control plane's fleet-wide duties on exactly
// one replica at a time, chosen by an etcd election: re-placing (or failing)
// the sessions of lost workers, detecting dead workers within about a second
// and fencing them (revoking their lease), marking workers that only stop
// answering health probes down, moving sessions off workers drained with
// migration, and expiring old session records. Every change it makes is a
// guarded etcd transaction, so a deposed leader still finishing a step
// cannot do harm.
package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Options configures a Supervisor.
type Options struct {
	// LeaderDuties run while this replica leads (each until its context
	// ends; an error ends the leadership), like the event log.
	LeaderDuties []func(ctx context.Context) error

	ReplicaID string
	Store     *fleetstore.Store
	Registry  *registry.Registry
	Health    HealthChecker
	// Confirm is the second signal about a suspect worker (health.go);
	// nil means TCPConfirmer.
	Confirm Confirmer
	Log     *slog.Logger
	// ElectionTTL is the leader's lease; a dead leader is replaced after it.
	ElectionTTL time.Duration
	// HealthInterval is the time between probe rounds (250 ms);
	// HealthTimeout bounds one probe (500 ms). A worker is suspect after
	// HealthFailures failed probes in a row (3) spanning at least
	// SuspectAfter of silence (1 s); see health.go.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	HealthFailures int
	SuspectAfter   time.Duration
	// NoFence turns fencing off: suspects are only marked down, and a dead
	// worker is lost when its lease expires.
	NoFence bool
	// OnFence, when set, is called with the id of each worker the leader
	// fenced (tests and metrics).
	OnFence func(workerID string)
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
		o.HealthInterval = 250 * time.Millisecond
	}
	if o.SuspectAfter == 0 {
		o.SuspectAfter = time.Second
	}
	if o.Confirm == nil {
		o.Confirm = TCPConfirmer{}
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
	lead, err := s.opts.Store.Campaign(ctx, ctx, s.opts.ReplicaID, s.opts.ElectionTTL)
	if err != nil {
		return err
	}
	s.log.Info("supervisor elected leader")

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(lctx)
	g.Go(func() error {
		select {
		case <-lead.Done():
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
	lead.Resign(rctx) // the next leader need not wait for the lease
	return err
}

// IsLeader reports whether this replica's id holds the election key now.
func IsLeader(ctx context.Context, store *fleetstore.Store, replicaID string) (bool, error) {
	return store.IsLeader(ctx, replicaID)
}
