package supervisor

import (
	"errors"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func view(id string, lease int64, down bool) registry.WorkerView {
	return registry.WorkerView{Worker: &fleetv1.Worker{Id: id}, Lease: clientv3.LeaseID(lease), Down: down}
}

func ids(ws []registry.WorkerView) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Worker.GetId())
	}
	return out
}

// TestTallySuspectsNeedBothFailuresAndSilence walks rounds of probe
// results through tally, as the health loop does each 250 ms.
func TestTallySuspectsNeedBothFailuresAndSilence(t *testing.T) {
	fail := errors.New("no answer")
	const failures, suspectAfter = 3, time.Second
	t0 := time.Unix(1000, 0)
	type round struct {
		at       time.Duration
		workers  []registry.WorkerView
		results  []error
		fenced   string // mark this worker fenced before the round
		suspects []string
		up       []string
	}
	tests := []struct {
		name   string
		rounds []round
	}{
		{"answering worker is never suspect", []round{
			{0, []registry.WorkerView{view("a", 1, false)}, []error{nil}, "", nil, nil},
			{2 * time.Second, []registry.WorkerView{view("a", 1, false)}, []error{nil}, "", nil, nil},
		}},
		{"enough failures but not silent long enough", []round{
			{0, []registry.WorkerView{view("a", 1, false)}, []error{nil}, "", nil, nil},
			{100 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{200 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{300 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
		}},
		{"silent long enough but too few failures", []round{
			{0, []registry.WorkerView{view("a", 1, false)}, []error{nil}, "", nil, nil},
			{2 * time.Second, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{3 * time.Second, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
		}},
		{"both: suspect; one answer resets", []round{
			{0, []registry.WorkerView{view("a", 1, false)}, []error{nil}, "", nil, nil},
			{400 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{800 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{1200 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", []string{"a"}, nil},
			{1300 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{nil}, "", nil, nil},
			{1400 * time.Millisecond, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
		}},
		{"a fenced worker is not suspect again", []round{
			{0, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{time.Second, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{2 * time.Second, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "a", nil, nil},
		}},
		{"a new lease starts afresh", []round{
			{0, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "", nil, nil},
			{time.Second, []registry.WorkerView{view("a", 1, false)}, []error{fail}, "a", nil, nil},
			{2 * time.Second, []registry.WorkerView{view("a", 2, false)}, []error{fail}, "", nil, nil},
			{2500 * time.Millisecond, []registry.WorkerView{view("a", 2, false)}, []error{fail}, "", nil, nil},
			{3100 * time.Millisecond, []registry.WorkerView{view("a", 2, false)}, []error{fail}, "", []string{"a"}, nil},
		}},
		{"a worker marked down that answers comes up", []round{
			{0, []registry.WorkerView{view("a", 1, true), view("b", 1, false)}, []error{nil, nil}, "", nil, []string{"a"}},
		}},
		{"only the failing one of two is suspect", []round{
			{0, []registry.WorkerView{view("a", 1, false), view("b", 1, false)}, []error{fail, nil}, "", nil, nil},
			{600 * time.Millisecond, []registry.WorkerView{view("a", 1, false), view("b", 1, false)}, []error{fail, nil}, "", nil, nil},
			{1200 * time.Millisecond, []registry.WorkerView{view("a", 1, false), view("b", 1, false)}, []error{fail, nil}, "", []string{"a"}, nil},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state := map[string]*probeState{}
			for i, r := range tc.rounds {
				if r.fenced != "" {
					state[r.fenced].fenced = true
				}
				up, suspects := tally(state, r.workers, r.results, t0.Add(r.at), failures, suspectAfter)
				if got := ids(suspects); !slices.Equal(got, r.suspects) {
					t.Errorf("round %d: suspects %v, want %v", i, got, r.suspects)
				}
				if got := ids(up); !slices.Equal(got, r.up) {
					t.Errorf("round %d: up %v, want %v", i, got, r.up)
				}
			}
		})
	}
}

// TestTallyForgetsWorkersThatLeft: state holds only registered workers.
func TestTallyForgetsWorkersThatLeft(t *testing.T) {
	state := map[string]*probeState{}
	now := time.Unix(1000, 0)
	tally(state, []registry.WorkerView{view("a", 1, false), view("b", 1, false)}, []error{nil, nil}, now, 3, time.Second)
	tally(state, []registry.WorkerView{view("b", 1, false)}, []error{nil}, now, 3, time.Second)
	if _, ok := state["a"]; ok || len(state) != 1 {
		t.Fatalf("state after a left: %v", state)
	}
}

func TestFenceAllowed(t *testing.T) {
	tests := []struct {
		suspects, fleet int
		noFence         bool
		want            bool
	}{
		{1, 1, false, true},  // a lone worker that died is fenced
		{1, 2, false, true},  // half of two
		{2, 2, false, false}, // the whole fleet at once: more likely our link
		{2, 4, false, true},
		{3, 4, false, false},
		{3, 6, false, true},
		{1, 10, true, false}, // fencing off
	}
	for _, tc := range tests {
		if got := fenceAllowed(tc.suspects, tc.fleet, tc.noFence); got != tc.want {
			t.Errorf("fenceAllowed(%d suspects, fleet %d, noFence %v) = %v, want %v", tc.suspects, tc.fleet, tc.noFence, got, tc.want)
		}
	}
}
