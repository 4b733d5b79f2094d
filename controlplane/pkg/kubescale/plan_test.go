package kubescale

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func wk(id, state string, sessions int) apiv1.Worker {
	return apiv1.Worker{ID: id, State: state, Sessions: sessions}
}

// withGPU gives w one GPU of slots slots, used used.
func withGPU(w apiv1.Worker, slots, used uint32) apiv1.Worker {
	w.GPUs = append(w.GPUs, apiv1.GPU{Index: uint32(len(w.GPUs)), Slots: slots, Used: used})
	return w
}

func TestNewPlan(t *testing.T) {
	const a, d = apiv1.WorkerActive, apiv1.WorkerDraining
	sts := Workload{Namespace: "gpu", Name: "avatarfleet-worker", Replicas: 3}
	tests := []struct {
		name    string
		w       Workload
		to      int32
		workers []apiv1.Worker
		want    Plan
	}{
		{
			name: "down 3 to 1 drains the highest ordinals, restores only the active ones",
			w:    sts, to: 1,
			workers: []apiv1.Worker{withGPU(withGPU(wk("avatarfleet-worker-0", a, 1), 2, 1), 2, 0), withGPU(wk("avatarfleet-worker-2", d, 2), 2, 2),
				withGPU(wk("avatarfleet-worker-1", a, 1), 4, 1), withGPU(wk("other-node", a, 4), 4, 4), withGPU(wk("drained-node", d, 0), 4, 0)},
			want: Plan{From: 3, To: 1, Drain: []string{"avatarfleet-worker-1", "avatarfleet-worker-2"},
				Restore: []string{"avatarfleet-worker-1"}, Moving: 3, Room: 3},
		},
		{
			name: "down to 0 drains all; a pod without a worker is only reported",
			w:    sts, to: 0,
			workers: []apiv1.Worker{wk("avatarfleet-worker-0", a, 1), wk("avatarfleet-worker-2", a, 0)},
			want: Plan{From: 3, To: 0, Moving: 1, Drain: []string{"avatarfleet-worker-0", "avatarfleet-worker-2"},
				Restore: []string{"avatarfleet-worker-0", "avatarfleet-worker-2"}, Unregistered: []string{"avatarfleet-worker-1"}},
		},
		{
			name: "up 3 to 5 awaits the new ordinals; a draining one that stays is reported",
			w:    sts, to: 5,
			workers: []apiv1.Worker{wk("avatarfleet-worker-0", a, 0), wk("avatarfleet-worker-1", d, 0), wk("avatarfleet-worker-2", a, 0)},
			want:    Plan{From: 3, To: 5, Await: []string{"avatarfleet-worker-3", "avatarfleet-worker-4"}, Draining: []string{"avatarfleet-worker-1"}},
		},
		{
			name: "up over a worker still leaving marks it stale",
			w:    Workload{Name: "w", Replicas: 1}, to: 3,
			workers: []apiv1.Worker{wk("w-0", a, 0), wk("w-1", d, 0), wk("w-2", a, 0)},
			want:    Plan{From: 1, To: 3, Await: []string{"w-1", "w-2"}, Stale: []string{"w-1"}},
		},
		{
			name: "ordinals start elsewhere",
			w:    Workload{Name: "w", Replicas: 2, OrdinalStart: 5}, to: 1,
			workers: []apiv1.Worker{wk("w-5", a, 0), wk("w-6", a, 3), wk("w-1", a, 0)},
			want:    Plan{From: 2, To: 1, Drain: []string{"w-6"}, Restore: []string{"w-6"}, Moving: 3},
		},
		{
			name: "same count changes nothing",
			w:    sts, to: 3,
			workers: []apiv1.Worker{wk("avatarfleet-worker-1", a, 2)},
			want:    Plan{From: 3, To: 3},
		},
		{
			name: "ids that only look like pods are not",
			w:    Workload{Name: "w", Replicas: 2}, to: 0,
			workers: []apiv1.Worker{wk("w-01", a, 1), wk("w-1x", a, 1), wk("w-", a, 1), wk("ww-1", a, 1), wk("w-1", a, 1)},
			want:    Plan{From: 2, To: 0, Drain: []string{"w-1"}, Restore: []string{"w-1"}, Unregistered: []string{"w-0"}, Moving: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewPlan(tt.w, tt.to, tt.workers)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct {
				name      string
				got, want []string
			}{
				{"Drain", got.Drain, tt.want.Drain}, {"Restore", got.Restore, tt.want.Restore},
				{"Unregistered", got.Unregistered, tt.want.Unregistered}, {"Await", got.Await, tt.want.Await},
				{"Stale", got.Stale, tt.want.Stale}, {"Draining", got.Draining, tt.want.Draining},
			} {
				if !slices.Equal(f.got, f.want) {
					t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
				}
			}
			if got.From != tt.want.From || got.To != tt.want.To || got.Moving != tt.want.Moving || got.Room != tt.want.Room {
				t.Errorf("from %d to %d moving %d room %d, want %d to %d moving %d room %d", got.From, got.To, got.Moving, got.Room,
					tt.want.From, tt.want.To, tt.want.Moving, tt.want.Room)
			}
		})
	}
}

func TestNewPlanRefuses(t *testing.T) {
	long := strings.Repeat("a", 62)
	tests := []struct {
		name string
		w    Workload
		to   int32
	}{
		{"negative replicas", Workload{Name: "w", Replicas: 1}, -1},
		{"too many replicas", Workload{Name: "w", Replicas: 1}, MaxReplicas + 1},
		{"negative current replicas", Workload{Name: "w", Replicas: -2}, 1},
		{"negative ordinal start", Workload{Name: "w", Replicas: 1, OrdinalStart: -1}, 1},
		{"pod names too long for worker ids", Workload{Name: long, Replicas: 1}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewPlan(tt.w, tt.to, nil); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
	// The longest name that fits is accepted.
	if _, err := NewPlan(Workload{Name: long, Replicas: 1}, 10, nil); err != nil {
		t.Fatalf("%s-9: %v", long, err)
	}
}

func TestOrdinal(t *testing.T) {
	w := Workload{Name: "avatarfleet-worker"}
	tests := []struct {
		id   string
		want int32
		ok   bool
	}{
		{"avatarfleet-worker-0", 0, true},
		{"avatarfleet-worker-12", 12, true},
		{"avatarfleet-worker-012", 0, false},
		{"avatarfleet-worker--1", 0, false},
		{"avatarfleet-worker-", 0, false},
		{"avatarfleet-worker-99999999999", 0, false},
		{"avatarfleet-workers-1", 0, false},
	}
	for _, tt := range tests {
		got, ok := w.Ordinal(tt.id)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Ordinal(%q) = %d, %v; want %d, %v", tt.id, got, ok, tt.want, tt.ok)
		}
		if ok && w.PodName(got) != tt.id {
			t.Errorf("PodName(%d) = %q, want %q", got, w.PodName(got), tt.id)
		}
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }
