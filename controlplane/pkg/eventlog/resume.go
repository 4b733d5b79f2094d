package eventlog

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// lastMark is where the stream stops: the last mark on the sessions'
// subjects, or a later one on a worker's subject when etcd backs it. A
// worker may publish on its own subject, so a mark found there counts only
// if one of that worker's keys changed at its revision; a forged one would
// otherwise make this leader skip every change up to it.
func (l *Log) lastMark(ctx context.Context, keys fleetstore.Keys) (fleetbus.Mark, bool, error) {
	ms, err := l.opts.Bus.LastMarks(ctx)
	if err != nil {
		return fleetbus.Mark{}, false, err
	}
	best, ok := ms.Sessions, ms.Sessions.Count > 0
	ids := make([]string, 0, len(ms.Workers))
	for id := range ms.Workers {
		ids = append(ids, id)
	}
	// Latest first: the first one backed by etcd is the answer.
	slices.SortFunc(ids, func(a, b string) int {
		ma, mb := ms.Workers[a], ms.Workers[b]
		return cmp.Or(cmp.Compare(mb.Revision, ma.Revision), cmp.Compare(mb.Index, ma.Index), cmp.Compare(a, b))
	})
	for _, id := range ids {
		m := ms.Workers[id]
		if ok && !best.Before(m) {
			break
		}
		backed, err := l.changedAt(ctx, keys, id, m.Revision)
		if err != nil {
			return fleetbus.Mark{}, false, err
		}
		if backed {
			return m, true, nil
		}
		l.log.Warn("ignoring an event mark on a worker's subject that etcd does not back", "worker", id, "mark", m.EventID())
	}
	return best, ok, nil
}

// changedAt reports whether one of a worker's keys (record, health and
// drain marks) changed at revision rev. It cannot tell (false) when rev is
// compacted or not reached yet.
func (l *Log) changedAt(ctx context.Context, keys fleetstore.Keys, worker string, rev int64) (bool, error) {
	exact := []string{keys.Worker(worker), keys.Health(worker), keys.Drain(worker)}
	at := func(r int64) (map[string]fleetstore.KV, bool, error) {
		kvs, _, err := l.opts.Store.ListAt(ctx, exact, r)
		if errors.Is(err, fleetstore.ErrCompacted) || errors.Is(err, fleetstore.ErrFutureRevision) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		out := map[string]fleetstore.KV{}
		for _, kv := range kvs {
			if slices.Contains(exact, kv.Key) { // the listing is by prefix
				out[kv.Key] = kv
			}
		}
		return out, true, nil
	}
	before, ok, err := at(rev - 1)
	if err != nil || !ok {
		return false, err
	}
	after, ok, err := at(rev)
	if err != nil || !ok {
		return false, err
	}
	for _, k := range exact {
		_, had := before[k]
		a, has := after[k]
		if (has && a.ModRevision == rev) || (had && !has) {
			return true, nil
		}
	}
	return false, nil
}
