package eventlog

import (
	"strings"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// stateEvent is the event a session record announces by reaching a state.
var stateEvent = map[fleetv1.SessionState]string{
	fleetv1.SessionState_SESSION_STATE_PLACING:  fleetbus.SessionPlacing,
	fleetv1.SessionState_SESSION_STATE_STARTING: fleetbus.SessionStarting,
	fleetv1.SessionState_SESSION_STATE_READY:    fleetbus.SessionReady,
	fleetv1.SessionState_SESSION_STATE_ENDED:    fleetbus.SessionEnded,
	fleetv1.SessionState_SESSION_STATE_FAILED:   fleetbus.SessionFailed,
}

// SessionEvents are the lifecycle events of one change of a session record
// from prev to cur (nil prev: the record is new; nil cur: it was deleted,
// which is retention expiring an ended record and announces nothing).
//
// A change of state announces the new state (session.starting, .ready,
// ...). A record that is READY on another worker than before, or READY
// after PLACING or STARTING, with moves > 0, also announces session.moved,
// from its moved_from to its worker, for its move_reason.
func SessionEvents(prev, cur *fleetv1.Session) []*fleetv1.Event {
	if cur == nil {
		return nil
	}
	var out []*fleetv1.Event
	if prev == nil || prev.GetState() != cur.GetState() {
		if typ, ok := stateEvent[cur.GetState()]; ok {
			out = append(out, fleetbus.SessionEvent(typ, cur))
		}
	}
	if moved(prev, cur) {
		e := fleetbus.SessionEvent(fleetbus.SessionMoved, cur)
		e.FromWorker, e.ToWorker, e.Reason = cur.GetMovedFrom(), cur.GetWorkerId(), cur.GetMoveReason()
		if e.FromWorker == "" && prev.GetState() == fleetv1.SessionState_SESSION_STATE_READY {
			e.FromWorker = prev.GetWorkerId()
		}
		out = append(out, e)
	}
	return out
}

func moved(prev, cur *fleetv1.Session) bool {
	if prev == nil || cur.GetMoves() == 0 || cur.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
		return false
	}
	switch prev.GetState() {
	case fleetv1.SessionState_SESSION_STATE_READY:
		return prev.GetWorkerId() != cur.GetWorkerId()
	case fleetv1.SessionState_SESSION_STATE_PLACING, fleetv1.SessionState_SESSION_STATE_STARTING:
		return true
	}
	return false
}

// WorkerChange is one change of what etcd says about a worker: its record
// (Before/After nil: absent), its health mark (down) and its admin drain
// mark, before and after.
type WorkerChange struct {
	Before, After       *fleetv1.Worker
	WasDown, Down       bool
	WasDrained, Drained bool
}

// WorkerEvents are the lifecycle events of one change about a worker, as
// the registry, the supervisor and the API announced them before events
// were derived:
//
//   - a record appears: worker.registered; it goes away: worker.deregistered
//     if it was DRAINING (it left on its own), worker.lost otherwise;
//   - the record goes ACTIVE → DRAINING or the drain mark appears:
//     worker.draining; back to ACTIVE or the mark goes: worker.undrained;
//   - the health mark appears: worker.down; it goes while the record stays:
//     worker.up (with the record, the lease took the mark: no event).
func WorkerEvents(id string, c WorkerChange) []*fleetv1.Event {
	rec := c.After
	if rec == nil {
		rec = c.Before
	}
	var types []string
	switch {
	case c.Before == nil && c.After != nil:
		types = append(types, fleetbus.WorkerRegistered)
	case c.Before != nil && c.After == nil:
		if c.Before.GetState() == fleetv1.WorkerState_WORKER_STATE_DRAINING {
			types = append(types, fleetbus.WorkerDeregistered)
		} else {
			types = append(types, fleetbus.WorkerLost)
		}
	case c.Before != nil && c.After != nil:
		was, is := c.Before.GetState(), c.After.GetState()
		switch {
		case was != is && is == fleetv1.WorkerState_WORKER_STATE_DRAINING:
			types = append(types, fleetbus.WorkerDraining)
		case was == fleetv1.WorkerState_WORKER_STATE_DRAINING && is == fleetv1.WorkerState_WORKER_STATE_ACTIVE:
			types = append(types, fleetbus.WorkerUndrained)
		}
	}
	if c.Drained != c.WasDrained {
		if c.Drained {
			types = append(types, fleetbus.WorkerDraining)
		} else {
			types = append(types, fleetbus.WorkerUndrained)
		}
	}
	switch {
	case c.Down && !c.WasDown:
		types = append(types, fleetbus.WorkerDown)
	case !c.Down && c.WasDown && c.After != nil:
		types = append(types, fleetbus.WorkerUp)
	}
	out := make([]*fleetv1.Event, len(types))
	for i, t := range types {
		out[i] = fleetbus.WorkerEvent(t, id, rec)
	}
	return out
}

// fleetState is what the log knows of etcd at the last revision it
// applied: the records and marks that events are derived from.
type fleetState struct {
	keys     fleetstore.Keys
	sessions map[string]*fleetv1.Session
	workers  map[string]*fleetv1.Worker
	down     map[string]bool
	drained  map[string]bool
}

func newState(keys fleetstore.Keys) *fleetState {
	return &fleetState{keys: keys, sessions: map[string]*fleetv1.Session{}, workers: map[string]*fleetv1.Worker{},
		down: map[string]bool{}, drained: map[string]bool{}}
}

// prefixes are what the state is listed from.
func (st *fleetState) prefixes() []string {
	return []string{st.keys.Sessions(), st.keys.Workers(), st.keys.Healths(), st.keys.Drains()}
}

// key is what one etcd key means to the log.
type key struct {
	kind int // keySession, keyWorker, keyHealth, keyDrain, or 0: not followed
	id   string
}

const (
	keySession = iota + 1
	keyWorker
	keyHealth
	keyDrain
)

func (st *fleetState) parse(k string) key {
	if id, ok := strings.CutPrefix(k, st.keys.Sessions()); ok {
		if id == "" || strings.Contains(id, "/") {
			return key{} // not a record (a sub-key of a session)
		}
		return key{keySession, id}
	}
	if !strings.HasPrefix(k, st.keys.Fleet()) {
		return key{}
	}
	pk, err := st.keys.Parse(k)
	if err != nil || pk.Worker == "" {
		return key{}
	}
	switch pk.Kind {
	case fleetstore.KindWorker:
		return key{keyWorker, pk.Worker}
	case fleetstore.KindHealth:
		return key{keyHealth, pk.Worker}
	case fleetstore.KindDrain:
		return key{keyDrain, pk.Worker}
	}
	return key{}
}

// load replaces the state with a listing.
func (st *fleetState) load(kvs []fleetstore.KV) {
	*st = *newState(st.keys)
	for _, kv := range kvs {
		st.set(st.parse(kv.Key), kv.Value, true)
	}
}

// set records one key's new value (present false: deleted). Undecodable
// records count as absent.
func (st *fleetState) set(k key, value []byte, present bool) {
	switch k.kind {
	case keySession:
		s, err := fleetstore.DecodeSession(value)
		if !present || err != nil {
			delete(st.sessions, k.id)
			return
		}
		st.sessions[k.id] = s
	case keyWorker:
		w, err := fleetstore.DecodeWorker(value)
		if !present || err != nil {
			delete(st.workers, k.id)
			return
		}
		st.workers[k.id] = w
	case keyHealth:
		if present {
			st.down[k.id] = true
		} else {
			delete(st.down, k.id)
		}
	case keyDrain:
		if present {
			st.drained[k.id] = true
		} else {
			delete(st.drained, k.id)
		}
	}
}

func (st *fleetState) worker(id string) WorkerChange {
	return WorkerChange{Before: st.workers[id], After: st.workers[id], WasDown: st.down[id], Down: st.down[id],
		WasDrained: st.drained[id], Drained: st.drained[id]}
}

// apply applies the changes of one revision and returns the events they
// announce, in the order of the changes. A revision's changes are one
// transaction, so the worker changes are compared as a whole: a lease
// expiring takes the record and the health mark in one revision, which is
// worker.lost, not also worker.up.
func (st *fleetState) apply(events []fleetstore.Event) []*fleetv1.Event {
	var (
		out     []*fleetv1.Event
		order   []string
		changes = map[string]*WorkerChange{}
	)
	for _, ev := range events {
		k := st.parse(ev.KV.Key)
		present := ev.Type == fleetstore.EventPut
		switch k.kind {
		case keySession:
			prev := st.sessions[k.id]
			st.set(k, ev.KV.Value, present)
			out = append(out, SessionEvents(prev, st.sessions[k.id])...)
		case keyWorker, keyHealth, keyDrain:
			if _, ok := changes[k.id]; !ok {
				c := st.worker(k.id)
				changes[k.id] = &c
				order = append(order, k.id)
			}
			st.set(k, ev.KV.Value, present)
			c := changes[k.id]
			c.After, c.Down, c.Drained = st.workers[k.id], st.down[k.id], st.drained[k.id]
		}
	}
	for _, id := range order {
		out = append(out, WorkerEvents(id, *changes[id])...)
	}
	return out
}

// diffSession is what a resync announces about one session record: the
// events of going from what was last announced about it (last; nil:
// nothing) to what the listing says (cur).
func diffSession(last, cur *fleetv1.Session) []*fleetv1.Event {
	if last != nil && proto.Equal(last, cur) {
		return nil
	}
	return SessionEvents(last, cur)
}
