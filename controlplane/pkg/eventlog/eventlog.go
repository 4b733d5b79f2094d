// Package eventlog derives the fleet's lifecycle events from etcd and
// publishes them to JetStream, so that etcd stays the one truth and a NATS
// outage delays events but loses none.
//
// The supervisor's leader runs one Log. It follows every change under the
// fleet's etcd prefix, keeps the session records and worker keys it needs
// (sessions/, fleet/workers/, fleet/health/, fleet/drain/), and turns each
// revision's changes into events (SessionEvents, WorkerEvents): the i-th
// event of revision R has the id "R-i", is published with that id as the
// JetStream message id (the stream's duplicate window drops a second copy)
// and with the revision in headers, and is acknowledged before the next one
// is sent, so the stream holds events in revision order. A publish that
// fails is retried with backoff, for as long as it takes.
//
// A new leader resumes after the last derived event in the stream: it reads
// etcd as it was at that revision and watches from the next. With no
// derived event in the stream, it starts from the beginning of etcd's
// history. When etcd has
// compacted that revision away, it lists the present state and announces,
// for each session record changed since, the difference from the last event
// the stream holds about it (and likewise for workers): changes that came
// and went inside the compacted history are not announced.
package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// maxReplay bounds the etcd history a first leader replays when the stream
// holds no derived event: past it (an etcd that never compacts), it
// announces the present instead.
const maxReplay = 100_000

// Bus is where events go (fleetbus.Publisher).
type Bus interface {
	PublishMarked(ctx context.Context, e *fleetv1.Event, m fleetbus.Mark) error
	LastMarks(ctx context.Context) (fleetbus.Marks, error)
	LastEvent(ctx context.Context, subject string) (*fleetv1.Event, bool, error)
	EventWorkers(ctx context.Context) ([]string, error)
}

// Store is where the truth is (fleetstore.Store).
type Store interface {
	Keys() fleetstore.Keys
	ListAt(ctx context.Context, prefixes []string, rev int64) ([]fleetstore.KV, int64, error)
	WatchFrom(ctx context.Context, opts fleetstore.WatchFromOptions, apply func(context.Context, int64, []fleetstore.Event)) error
}

// Options configures a Log.
type Options struct {
	Store Store
	Bus   Bus
	Log   *slog.Logger
	// Metrics, when set, count what the log publishes.
	Metrics *Metrics
	// PublishTimeout bounds one publish attempt (default 2 s: an ack takes
	// milliseconds; an attempt lost in an outage should not hold the log
	// long after NATS is back, and a late ack's retry is stored once).
	PublishTimeout time.Duration
	// MaxBackoff bounds the wait between attempts (default 1 s: an attempt
	// costs NATS little, and events wait for it).
	MaxBackoff time.Duration
}

// Log publishes the lifecycle events derived from etcd.
type Log struct {
	opts Options
	log  *slog.Logger
}

// New returns a Log.
func New(opts Options) *Log {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 2 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	return &Log{opts: opts, log: opts.Log.With("component", "eventlog")}
}

// Run derives and publishes events until ctx ends (leadership is lost);
// it returns nil then.
func (l *Log) Run(ctx context.Context) error {
	bo := l.backoff()
	for ctx.Err() == nil {
		err := l.runOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		wait := bo.NextBackOff()
		l.log.Warn("event log interrupted; resuming from the stream's last event", "err", err, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

func (l *Log) backoff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = 100*time.Millisecond, l.opts.MaxBackoff
	return bo
}

// runOnce finds where the stream stops, loads etcd's state there and
// follows etcd from it.
func (l *Log) runOnce(ctx context.Context) error {
	st := newState(l.opts.Store.Keys())
	mark, ok, err := l.lastMark(ctx, st.keys)
	if err != nil {
		return err
	}
	var (
		after int64
		skip  fleetbus.Mark // events of a revision already published
	)
	if ok {
		after = mark.Revision
		if !mark.Last() {
			after, skip = mark.Revision-1, mark
		}
		kvs, _, err := l.opts.Store.ListAt(ctx, st.prefixes(), after)
		switch {
		case errors.Is(err, fleetstore.ErrCompacted):
			if after, err = l.resync(ctx, st, mark); err != nil {
				return err
			}
			skip = fleetbus.Mark{}
		case errors.Is(err, fleetstore.ErrFutureRevision):
			// etcd restored from an older backup, or a mark that is not
			// ours: nothing to resume from.
			l.log.Error("the stream's last event is past etcd's revision; deriving events from etcd's history", "revision", mark.Revision)
			ok = false
		case err != nil:
			return err
		default:
			st.load(kvs)
		}
	}
	if !ok {
		// No derived event yet (a new fleet, or one that published events
		// before they were derived): follow etcd's history from its start,
		// or, where it is compacted or too long, announce the present.
		after = 0
		_, now, err := l.opts.Store.ListAt(ctx, st.prefixes(), 0)
		if err != nil {
			return err
		}
		_, _, err = l.opts.Store.ListAt(ctx, st.prefixes(), 1)
		if errors.Is(err, fleetstore.ErrCompacted) || now > maxReplay {
			if after, err = l.resync(ctx, st, fleetbus.Mark{}); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		l.log.Info("no derived event in the stream: deriving events from etcd's history", "after", after)
	} else {
		l.log.Info("resuming the event log", "after", after, "last", mark.EventID())
	}
	err = l.opts.Store.WatchFrom(ctx, fleetstore.WatchFromOptions{Prefix: l.opts.Store.Keys().Prefix(), After: after, Name: "eventlog", Log: l.log},
		func(ctx context.Context, rev int64, events []fleetstore.Event) {
			l.publish(ctx, rev, st.apply(events), skip)
		})
	if err != nil {
		return fmt.Errorf("follow etcd: %w", err)
	}
	return nil
}

// publish publishes one revision's events in order, each until it is
// acknowledged (or ctx ends), skipping those at or before skip.
func (l *Log) publish(ctx context.Context, rev int64, events []*fleetv1.Event, skip fleetbus.Mark) {
	for i, e := range events {
		m := fleetbus.Mark{Revision: rev, Index: i, Count: len(events)}
		if !skip.Before(m) {
			continue
		}
		attempts := 0
		_, err := backoff.Retry(ctx, func() (struct{}, error) {
			attempts++
			actx, cancel := context.WithTimeout(ctx, l.opts.PublishTimeout)
			defer cancel()
			err := l.opts.Bus.PublishMarked(actx, e, m)
			if errors.Is(err, fleetbus.ErrInvalidEvent) {
				return struct{}{}, backoff.Permanent(err)
			}
			return struct{}{}, err
		}, backoff.WithBackOff(l.backoff()), backoff.WithMaxElapsedTime(0),
			backoff.WithNotify(func(err error, wait time.Duration) {
				l.opts.Metrics.failures.Inc()
				l.log.Warn("publish event failed; retrying", "event", m.EventID(), "type", e.GetType(), "err", err, "backoff", wait)
			}))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Only an event no retry can publish gets here.
			l.log.Error("event dropped: it cannot be published", "event", m.EventID(), "type", e.GetType(), "err", err)
		default:
			l.opts.Metrics.published.Inc()
			l.opts.Metrics.revision.Set(float64(rev))
			if attempts > 1 {
				l.log.Info("event published after retries", "event", m.EventID(), "type", e.GetType(), "attempts", attempts)
			}
		}
	}
}
