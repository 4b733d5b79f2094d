package fleetstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrCompacted is the error of ListAt and WatchFrom when the revision asked
// for is older than etcd's compacted history.
var ErrCompacted = errors.New("revision compacted")

// ErrFutureRevision is the error of ListAt for a revision etcd has not
// reached.
var ErrFutureRevision = errors.New("revision not reached yet")

// ListAt lists every key under the prefixes as they were at revision rev
// (0: now) and returns the revision read at. A revision that etcd has
// compacted away gives ErrCompacted.
func (s *Store) ListAt(ctx context.Context, prefixes []string, rev int64) ([]KV, int64, error) {
	var kvs []KV
	for _, p := range prefixes {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, p, opts...)
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil, 0, fmt.Errorf("list %s at revision %d: %w", p, rev, ErrCompacted)
		}
		if errors.Is(err, rpctypes.ErrFutureRev) {
			return nil, 0, fmt.Errorf("list %s at revision %d: %w", p, rev, ErrFutureRevision)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("list %s: %w", p, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			kvs = append(kvs, kvFrom(kv))
		}
	}
	return kvs, rev, nil
}

// WatchFromOptions configures a WatchFrom.
type WatchFromOptions struct {
	// Prefix is the key prefix to follow.
	Prefix string
	// After is the last revision already seen: changes come from After+1.
	After int64
	// PrevKV asks for the previous value of changed keys (Event.Prev).
	PrevKV bool
	// MinBackoff and MaxBackoff bound the jittered exponential wait before
	// a broken watch is resumed (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// Name names the watch in logs.
	Name string
	Log  *slog.Logger
}

// WatchFrom follows every change under a prefix from a given revision and
// gives apply the changes one revision (one transaction) at a time, in
// revision order, with no gap: unlike ListWatch it never lists again, so a
// broken watch (a lost etcd leader, a closed stream) is resumed from the
// revision after the last one applied. It returns an error wrapping
// ErrCompacted when the next revision is no longer in etcd's history (the
// caller decides how to resynchronise), and nil when ctx ends.
//
// apply runs in WatchFrom's goroutine; when it returns, its revision counts
// as applied.
func (s *Store) WatchFrom(ctx context.Context, opts WatchFromOptions, apply func(ctx context.Context, rev int64, events []Event)) error {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = opts.MinBackoff, opts.MaxBackoff
	after := opts.After
	for ctx.Err() == nil {
		var err error
		after, err = s.watchOnce(ctx, opts, after, apply, bo.Reset)
		if errors.Is(err, ErrCompacted) {
			return err
		}
		if ctx.Err() != nil {
			break
		}
		wait := bo.NextBackOff()
		log.Warn("watch interrupted; resuming", "watch", opts.Name, "after", after, "err", err, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// watchOnce follows one watch stream until it fails; it returns the last
// revision applied.
func (s *Store) watchOnce(ctx context.Context, opts WatchFromOptions, after int64, apply func(context.Context, int64, []Event), healthy func()) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wopts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(after + 1)}
	if opts.PrevKV {
		wopts = append(wopts, clientv3.WithPrevKV())
	}
	ch := s.cli.Watch(wctx, opts.Prefix, wopts...)
	for {
		var (
			resp clientv3.WatchResponse
			ok   bool
		)
		select {
		case <-ctx.Done():
			return after, nil
		case resp, ok = <-ch:
		}
		if !ok {
			return after, errWatchClosed
		}
		if resp.CompactRevision > 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			return after, fmt.Errorf("watch %s from revision %d (compacted at %d): %w", opts.Prefix, after+1, resp.CompactRevision, ErrCompacted)
		}
		if err := resp.Err(); err != nil {
			return after, fmt.Errorf("watch %s: %w", opts.Prefix, err)
		}
		if resp.Canceled {
			return after, fmt.Errorf("watch %s canceled", opts.Prefix)
		}
		healthy()
		// etcd never splits one revision over two responses (it batches
		// whole revisions), so a response is cut into revisions here.
		for i := 0; i < len(resp.Events); {
			rev := resp.Events[i].Kv.ModRevision
			var batch []Event
			for ; i < len(resp.Events) && resp.Events[i].Kv.ModRevision == rev; i++ {
				batch = append(batch, eventFrom(resp.Events[i]))
			}
			if rev <= after {
				continue // already applied before a resume
			}
			apply(ctx, rev, batch)
			if ctx.Err() != nil {
				return after, nil
			}
			after = rev
		}
	}
}

func eventFrom(ev *clientv3.Event) Event {
	e := Event{Type: EventPut, KV: kvFrom(ev.Kv)}
	if ev.Type == mvccpb.DELETE {
		e.Type = EventDelete
	}
	if ev.PrevKv != nil {
		prev := kvFrom(ev.PrevKv)
		e.Prev = &prev
	}
	return e
}
