package fleetstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is one key as a listing or a watch saw it.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Lease          int64
}

func kvFrom(kv *mvccpb.KeyValue) KV {
	return KV{Key: string(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: kv.Lease}
}

// EventType is what a watched change did to a key.
type EventType int

// The kinds of change.
const (
	EventPut EventType = iota + 1
	EventDelete
)

// Event is one change of one key. For a delete, KV has the key and the
// deletion's revision; Prev is the key as it was before the change when the
// watch asked for it (WithPrevKV) and etcd still had it.
type Event struct {
	Type EventType
	KV   KV
	Prev *KV
}

// Handler receives what one ListWatch sees. Its calls are never concurrent.
type Handler interface {
	// Replace gives a full listing of every prefix at revision rev: first,
	// and again after each resync (compaction, a broken watch, a timer).
	Replace(ctx context.Context, kvs []KV, rev int64)
	// Apply gives the events of one watch response, in revision order;
	// rev is the response's header revision. A progress notification
	// comes with no events.
	Apply(ctx context.Context, events []Event, rev int64)
}

// HandlerFuncs adapts two functions to a Handler; a nil one does nothing.
type HandlerFuncs struct {
	ReplaceFunc func(ctx context.Context, kvs []KV, rev int64)
	ApplyFunc   func(ctx context.Context, events []Event, rev int64)
}

// Replace implements Handler.
func (h HandlerFuncs) Replace(ctx context.Context, kvs []KV, rev int64) {
	if h.ReplaceFunc != nil {
		h.ReplaceFunc(ctx, kvs, rev)
	}
}

// Apply implements Handler.
func (h HandlerFuncs) Apply(ctx context.Context, events []Event, rev int64) {
	if h.ApplyFunc != nil {
		h.ApplyFunc(ctx, events, rev)
	}
}

// ListWatchOptions configures a ListWatch.
type ListWatchOptions struct {
	// Prefixes are the key prefixes to follow; each is listed at the same
	// revision and watched from the next. Events of different prefixes may
	// reach Apply in any order relative to each other; within one prefix
	// they come in revision order.
	Prefixes []string
	// PrevKV asks for the previous value of changed keys (Event.Prev).
	PrevKV bool
	// ProgressNotify makes etcd report progress while nothing changes, so
	// Apply moves the revision on (for callers waiting on a revision).
	ProgressNotify bool
	// Resync, when > 0, lists everything again that often even while the
	// watch is healthy: it catches anything a handler could have missed.
	Resync time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential wait before a
	// listing is retried after a failure (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// StallTimeout, when > 0, is how long the watch may stay silent: the
	// watch asks etcd for a progress report every third of it, and a watch
	// that hears nothing at all for that long (its member died silently or
	// lost the cluster without noticing) is dropped and everything listed
	// again on another member. 0 means 2 s; negative turns it off.
	StallTimeout time.Duration
	// Name names the watch in logs.
	Name string
	Log  *slog.Logger
}

// ListWatch lists the prefixes at one revision, hands the listing to h,
// then follows a watch of each from the next revision, like a Kubernetes
// informer. When the watch falls behind compaction, breaks, or loses the
// cluster's leader (every watch requires a leader, so a member cut off from
// the cluster is noticed instead of silently delivering nothing), or when
// the Resync period passes, it lists again and calls Replace. It returns
// when ctx ends.
func (s *Store) ListWatch(ctx context.Context, opts ListWatchOptions, h Handler) error {
	if len(opts.Prefixes) == 0 {
		return errors.New("list-watch: no prefix to follow")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = 2 * time.Second
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = opts.MinBackoff, opts.MaxBackoff
	for ctx.Err() == nil {
		rev, err := s.listAll(ctx, opts.Prefixes, h)
		if err == nil {
			bo.Reset()
			err = s.follow(ctx, opts, rev, h)
			if err == nil {
				continue // resync timer: list again at once
			}
		}
		if ctx.Err() != nil {
			break
		}
		wait := bo.NextBackOff()
		log.Warn("list-watch interrupted; listing again", "watch", opts.Name, "err", err, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

func (s *Store) listAll(ctx context.Context, prefixes []string, h Handler) (int64, error) {
	var (
		rev int64
		kvs []KV
	)
	for i, p := range prefixes {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if i > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, p, opts...)
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", p, err)
		}
		if i == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			kvs = append(kvs, kvFrom(kv))
		}
	}
	h.Replace(ctx, kvs, rev)
	return rev, nil
}

// follow applies the watches' responses until one fails (an error) or the
// resync period passes (nil).
func (s *Store) follow(ctx context.Context, opts ListWatchOptions, rev int64, h Handler) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wopts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev + 1)}
	if opts.PrevKV {
		wopts = append(wopts, clientv3.WithPrevKV())
	}
	if opts.ProgressNotify {
		wopts = append(wopts, clientv3.WithProgressNotify())
	}
	chans := make([]<-chan clientv3.WatchResponse, len(opts.Prefixes))
	for i, p := range opts.Prefixes {
		chans[i] = s.cli.Watch(wctx, p, wopts...)
	}
	var resync <-chan time.Time
	if opts.Resync > 0 {
		t := time.NewTimer(opts.Resync)
		defer t.Stop()
		resync = t.C
	}
	var (
		stalled  <-chan struct{}
		lastRev  atomic.Int64 // header revision of the last response
		lastSeen atomic.Int64 // when it came (UnixNano)
	)
	lastRev.Store(rev)
	lastSeen.Store(time.Now().UnixNano())
	if opts.StallTimeout > 0 {
		c, done := make(chan struct{}), make(chan struct{})
		stalled = c
		go func() {
			defer close(done)
			s.watchStall(wctx, opts.Prefixes[0], opts.StallTimeout, &lastRev, &lastSeen, c)
		}()
		defer func() { cancel(); <-done }()
	}
	// Several prefixes are merged here, in this goroutine, so the handler
	// is never called concurrently.
	for {
		resp, ok, err := receive(ctx, chans, resync, stalled)
		if errors.Is(err, errWatchStalled) {
			return fmt.Errorf("watch %v: %w", opts.Prefixes, err)
		}
		if err != nil || !ok {
			return err
		}
		lastRev.Store(resp.Header.Revision)
		lastSeen.Store(time.Now().UnixNano())
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch %v: %w", opts.Prefixes, err)
		}
		if resp.Canceled {
			return fmt.Errorf("watch %v canceled", opts.Prefixes)
		}
		events := make([]Event, 0, len(resp.Events))
		for _, ev := range resp.Events {
			e := Event{Type: EventPut, KV: kvFrom(ev.Kv)}
			if ev.Type == mvccpb.DELETE {
				e.Type = EventDelete
			}
			if ev.PrevKv != nil {
				prev := kvFrom(ev.PrevKv)
				e.Prev = &prev
			}
			events = append(events, e)
		}
		h.Apply(ctx, events, resp.Header.Revision)
	}
}

var (
	errWatchClosed  = errors.New("watch channel closed")
	errWatchStalled = errors.New("watch silent (no progress report)")
)

// watchStall closes stalled when the watch falls behind the cluster: it
// asks for progress reports (a live member answers even while nothing
// changes) and reads the cluster's revision from any member with a leader;
// a watch that has not reached a revision the cluster had stallAfter ago,
// or heard nothing for that long, is on a member that died silently or
// lost the cluster without noticing (it may still answer, from a frozen
// store). It returns when ctx ends.
func (s *Store) watchStall(ctx context.Context, key string, stallAfter time.Duration, lastRev, lastSeen *atomic.Int64, stalled chan<- struct{}) {
	every := stallAfter / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	var (
		target int64 // a cluster revision the watch has yet to reach
		since  time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_ = s.cli.RequestProgress(ctx)
		now := time.Now()
		if now.Sub(time.Unix(0, lastSeen.Load())) > stallAfter {
			close(stalled)
			return
		}
		if target > 0 && lastRev.Load() >= target {
			target = 0
		}
		if target > 0 && now.Sub(since) > stallAfter {
			close(stalled)
			return
		}
		if target == 0 {
			rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), every)
			// A key the watcher may read (with etcd auth on, its role
			// covers little else); only the header's revision matters.
			resp, err := s.cli.Get(rctx, key, clientv3.WithCountOnly())
			cancel()
			if err == nil && resp.Header.Revision > lastRev.Load() {
				target, since = resp.Header.Revision, now
			}
		}
	}
}

// receive waits for the next response of any watch; ok is false (and err
// nil) when the resync timer fired or ctx ended; err is errWatchStalled
// when the watch stalled.
func receive(ctx context.Context, chans []<-chan clientv3.WatchResponse, resync <-chan time.Time, stalled <-chan struct{}) (clientv3.WatchResponse, bool, error) {
	cases := make([]reflect.SelectCase, 0, len(chans)+3)
	cases = append(cases,
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(resync)},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(stalled)})
	for _, c := range chans {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
	}
	chosen, v, ok := reflect.Select(cases)
	if chosen < 2 {
		return clientv3.WatchResponse{}, false, nil
	}
	if chosen == 2 {
		return clientv3.WatchResponse{}, false, errWatchStalled
	}
	if !ok {
		return clientv3.WatchResponse{}, false, errWatchClosed
	}
	return v.Interface().(clientv3.WatchResponse), true, nil
}
