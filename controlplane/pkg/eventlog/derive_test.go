package eventlog

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

const (
	placing  = fleetv1.SessionState_SESSION_STATE_PLACING
	starting = fleetv1.SessionState_SESSION_STATE_STARTING
	ready    = fleetv1.SessionState_SESSION_STATE_READY
	ended    = fleetv1.SessionState_SESSION_STATE_ENDED
	failed   = fleetv1.SessionState_SESSION_STATE_FAILED
	active   = fleetv1.WorkerState_WORKER_STATE_ACTIVE
	draining = fleetv1.WorkerState_WORKER_STATE_DRAINING
)

func sess(state fleetv1.SessionState, worker string, moves uint32) *fleetv1.Session {
	s := &fleetv1.Session{Id: "s1", Owner: "o", State: state, WorkerId: worker, Moves: moves}
	if moves > 0 {
		s.MovedFrom, s.MoveReason = "old", "worker_lost"
	}
	return s
}

func types(events []*fleetv1.Event) []string {
	out := []string{}
	for _, e := range events {
		out = append(out, e.GetType())
	}
	return out
}

func TestSessionEvents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur *fleetv1.Session
		want      []string
	}{
		{"created placing", nil, sess(placing, "", 0), []string{"session.placing"}},
		{"created starting", nil, sess(starting, "w1", 0), []string{"session.starting"}},
		{"started", sess(starting, "w1", 0), sess(ready, "w1", 0), []string{"session.ready"}},
		{"deleted", sess(ready, "w1", 0), sess(ended, "w1", 0), []string{"session.ended"}},
		{"failed while starting", sess(starting, "w1", 0), sess(failed, "w1", 0), []string{"session.failed"}},
		{"same state, other fields", sess(ready, "w1", 0), func() *fleetv1.Session { s := sess(ready, "w1", 0); s.Labels = map[string]string{"a": "b"}; return s }(), []string{}},
		{"record expired", sess(ended, "w1", 0), nil, []string{}},
		{"lost: placing again", sess(ready, "w1", 0), sess(placing, "w1", 0), []string{"session.placing"}},
		{"re-placed: starting elsewhere", sess(placing, "w1", 0), sess(starting, "w2", 1), []string{"session.starting"}},
		{"re-placed: ready elsewhere", sess(starting, "w2", 1), sess(ready, "w2", 1), []string{"session.ready", "session.moved"}},
		{"ready after placing, moved", sess(placing, "w1", 0), sess(ready, "w2", 1), []string{"session.ready", "session.moved"}},
		{"first start is no move", sess(starting, "w1", 0), sess(ready, "w1", 0), []string{"session.ready"}},
		{"migrated: ready on the target", sess(ready, "w1", 0), sess(ready, "w2", 1), []string{"session.moved"}},
		{"migration done: source cleared", sess(ready, "w2", 1), sess(ready, "w2", 1), []string{}},
		{"other worker without a move count", sess(ready, "w1", 0), sess(ready, "w2", 0), []string{}},
		{"moved session ends", sess(ready, "w2", 1), sess(ended, "w2", 1), []string{"session.ended"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SessionEvents(tc.prev, tc.cur)
			if !slices.Equal(types(got), tc.want) {
				t.Fatalf("events %v, want %v", types(got), tc.want)
			}
			for _, e := range got {
				if e.GetSessionId() != "s1" || !proto.Equal(e.GetSession(), tc.cur) || e.GetWorkerId() != tc.cur.GetWorkerId() {
					t.Errorf("%s: session %q worker %q record %v", e.GetType(), e.GetSessionId(), e.GetWorkerId(), e.GetSession())
				}
				if e.GetType() == fleetbus.SessionMoved && (e.GetFromWorker() != "old" || e.GetToWorker() != tc.cur.GetWorkerId() || e.GetReason() != "worker_lost") {
					t.Errorf("moved from %q to %q for %q, want old → %s for worker_lost", e.GetFromWorker(), e.GetToWorker(), e.GetReason(), tc.cur.GetWorkerId())
				}
			}
		})
	}
}

func TestMovedFromPreviousWorker(t *testing.T) {
	cur := sess(ready, "w2", 1)
	cur.MovedFrom = ""
	got := SessionEvents(sess(ready, "w1", 0), cur)
	if len(got) != 1 || got[0].GetFromWorker() != "w1" || got[0].GetToWorker() != "w2" {
		t.Fatalf("got %v, want one move w1 → w2", got)
	}
}

func TestWorkerEvents(t *testing.T) {
	w := func(state fleetv1.WorkerState) *fleetv1.Worker { return &fleetv1.Worker{Id: "w1", State: state} }
	for _, tc := range []struct {
		name string
		c    WorkerChange
		want []string
	}{
		{"registered", WorkerChange{After: w(active)}, []string{"worker.registered"}},
		{"draining itself", WorkerChange{Before: w(active), After: w(draining)}, []string{"worker.draining"}},
		{"undrained itself", WorkerChange{Before: w(draining), After: w(active)}, []string{"worker.undrained"}},
		{"record rewritten", WorkerChange{Before: w(active), After: w(active)}, []string{}},
		{"deregistered after draining", WorkerChange{Before: w(draining)}, []string{"worker.deregistered"}},
		{"lost", WorkerChange{Before: w(active)}, []string{"worker.lost"}},
		{"lost while down: no up", WorkerChange{Before: w(active), WasDown: true}, []string{"worker.lost"}},
		{"admin drain", WorkerChange{Before: w(active), After: w(active), Drained: true}, []string{"worker.draining"}},
		{"admin undrain", WorkerChange{Before: w(active), After: w(active), WasDrained: true}, []string{"worker.undrained"}},
		{"down", WorkerChange{Before: w(active), After: w(active), Down: true}, []string{"worker.down"}},
		{"up", WorkerChange{Before: w(active), After: w(active), WasDown: true}, []string{"worker.up"}},
		{"drain mark of an absent worker", WorkerChange{Drained: true}, []string{"worker.draining"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WorkerEvents("w1", tc.c)
			if !slices.Equal(types(got), tc.want) {
				t.Fatalf("events %v, want %v", types(got), tc.want)
			}
			for _, e := range got {
				if e.GetWorkerId() != "w1" || e.GetSessionId() != "" || fleetbus.Subject(e) != fleetbus.WorkerSubject("w1") {
					t.Errorf("%s: worker %q session %q subject %s", e.GetType(), e.GetWorkerId(), e.GetSessionId(), fleetbus.Subject(e))
				}
			}
		})
	}
}

// TestApplyRevisions: the state machine over etcd changes, one revision at
// a time, as the watch gives them.
func TestApplyRevisions(t *testing.T) {
	keys := fleetstore.NewKeys("/t/")
	put := func(k string, m proto.Message) fleetstore.Event {
		v := []byte("down")
		if m != nil {
			v, _ = proto.Marshal(m)
		}
		return fleetstore.Event{Type: fleetstore.EventPut, KV: fleetstore.KV{Key: k, Value: v}}
	}
	del := func(k string) fleetstore.Event {
		return fleetstore.Event{Type: fleetstore.EventDelete, KV: fleetstore.KV{Key: k}}
	}
	wrec := &fleetv1.Worker{Id: "w1", State: active}
	st := newState(keys)
	for i, step := range []struct {
		events []fleetstore.Event
		want   []string
	}{
		{[]fleetstore.Event{put(keys.Worker("w1"), wrec)}, []string{"worker.registered"}},
		// A create: the record, the slot and owner keys in one transaction.
		{[]fleetstore.Event{put(keys.Session("s1"), sess(starting, "w1", 0)), put(keys.Slot("w1", 0, 0), &fleetv1.Session{}),
			put(keys.OwnerLiveSession("o", "s1"), &fleetv1.Session{})}, []string{"session.starting"}},
		{[]fleetstore.Event{put(keys.Session("s1"), sess(ready, "w1", 0))}, []string{"session.ready"}},
		{[]fleetstore.Event{put(keys.Session("s1")+"/speech/1", &fleetv1.Session{})}, []string{}},
		{[]fleetstore.Event{put(keys.Health("w1"), nil)}, []string{"worker.down"}},
		{[]fleetstore.Event{del(keys.Health("w1"))}, []string{"worker.up"}},
		{[]fleetstore.Event{put(keys.Health("w1"), nil)}, []string{"worker.down"}},
		// The lease expires: record, health mark and slot go at once.
		{[]fleetstore.Event{del(keys.Health("w1")), del(keys.Slot("w1", 0, 0)), del(keys.Worker("w1"))}, []string{"worker.lost"}},
		{[]fleetstore.Event{put(keys.Session("s1"), sess(failed, "w1", 0))}, []string{"session.failed"}},
		{[]fleetstore.Event{del(keys.Session("s1"))}, []string{}},
		{[]fleetstore.Event{put(keys.Drain("w1"), nil)}, []string{"worker.draining"}},
	} {
		if got := types(st.apply(step.events)); !slices.Equal(got, step.want) {
			t.Fatalf("step %d: events %v, want %v", i, got, step.want)
		}
	}
}

func TestMarkOrder(t *testing.T) {
	for _, tc := range []struct {
		a, b fleetbus.Mark
		want bool
	}{
		{fleetbus.Mark{Revision: 5, Index: 0, Count: 2}, fleetbus.Mark{Revision: 5, Index: 1, Count: 2}, true},
		{fleetbus.Mark{Revision: 5, Index: 1, Count: 2}, fleetbus.Mark{Revision: 6, Index: 0, Count: 1}, true},
		{fleetbus.Mark{Revision: 6, Index: 0, Count: 1}, fleetbus.Mark{Revision: 5, Index: 1, Count: 2}, false},
		{fleetbus.Mark{}, fleetbus.Mark{Revision: 1, Index: 0, Count: 1}, true},
	} {
		if got := tc.a.Before(tc.b); got != tc.want {
			t.Errorf("%v before %v: %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
