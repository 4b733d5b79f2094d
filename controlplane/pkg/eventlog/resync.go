package eventlog

import (
	"context"
	"fmt"
	"slices"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// resync is the way back when etcd compacted the revision the stream stops
// at: the changes since are no longer in etcd's history. It lists the
// present, compares each record changed after the mark with the last event
// the stream holds about it, publishes the difference as the events of the
// listing's revision, and returns that revision (st holds the listing).
//
// What it cannot see: a session created and expired in the gap, states a
// record went through and left again, and worker changes other than
// appearing, going, and its health and drain marks as the last worker event
// tells them.
func (l *Log) resync(ctx context.Context, st *fleetState, mark fleetbus.Mark) (int64, error) {
	kvs, rev, err := l.opts.Store.ListAt(ctx, st.prefixes(), 0)
	if err != nil {
		return 0, err
	}
	st.load(kvs)
	l.opts.Metrics.resyncs.Inc()
	l.log.Warn("etcd compacted the revision the event stream stops at; announcing what changed since, from a listing (intermediate changes are lost)",
		"last", mark.EventID(), "listed_at", rev)
	var events []*fleetv1.Event
	for _, kv := range kvs {
		k := st.parse(kv.Key)
		if k.kind != keySession || kv.ModRevision <= mark.Revision {
			continue
		}
		cur := st.sessions[k.id]
		if cur == nil {
			continue
		}
		last, ok, err := l.opts.Bus.LastEvent(ctx, fleetbus.SessionSubject(k.id))
		if err != nil {
			return 0, fmt.Errorf("resync session %s: %w", k.id, err)
		}
		var prev *fleetv1.Session
		if ok {
			prev = last.GetSession()
		}
		events = append(events, diffSession(prev, cur)...)
	}
	workers, err := l.opts.Bus.EventWorkers(ctx)
	if err != nil {
		return 0, err
	}
	for id := range st.workers {
		workers = append(workers, id)
	}
	slices.Sort(workers)
	for _, id := range slices.Compact(workers) {
		last, ok, err := l.opts.Bus.LastEvent(ctx, fleetbus.WorkerSubject(id))
		if err != nil {
			return 0, fmt.Errorf("resync worker %s: %w", id, err)
		}
		c := st.worker(id)
		c.Before, c.WasDown, c.WasDrained = nil, false, false
		if ok {
			c.Before, c.WasDown, c.WasDrained = lastKnown(last)
		}
		events = append(events, WorkerEvents(id, c)...)
	}
	l.publish(ctx, rev, events, fleetbus.Mark{})
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return rev, nil
}

// lastKnown is what a worker's last event says about it.
func lastKnown(e *fleetv1.Event) (rec *fleetv1.Worker, down, drained bool) {
	switch e.GetType() {
	case fleetbus.WorkerLost, fleetbus.WorkerDeregistered:
		return nil, false, false
	}
	rec = e.GetWorker()
	if rec == nil {
		rec = &fleetv1.Worker{Id: e.GetWorkerId()}
	}
	drained = e.GetType() == fleetbus.WorkerDraining && rec.GetState() != fleetv1.WorkerState_WORKER_STATE_DRAINING
	return rec, e.GetType() == fleetbus.WorkerDown, drained
}

var _ Store = (*fleetstore.Store)(nil)
var _ Bus = (*fleetbus.Publisher)(nil)
