package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/proto/embedded/embeddedtest"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// reachable is a Confirmer (unit tests only) for which every worker answers.
type reachable struct{}

func (reachable) Reachable(context.Context, registry.WorkerView) error { return nil }

// TestJudgeMassSuspicionMarksNoneDown: on a real etcd, a suspect a
// minority of the fleet is marked down (it answers the confirmation: not
// fenced); when most of the fleet is suspect at once (the leader's probes
// lag: CPU starvation, its NATS link), none is marked down. Marking every
// worker down made every create of the fleet 503 no_capacity.
func TestJudgeMassSuspicionMarksNoneDown(t *testing.T) {
	tests := []struct {
		name     string
		suspects int
		noFence  bool
		wantDown int
	}{
		{name: "one of four suspect: marked down", suspects: 1, wantDown: 1},
		{name: "two of four suspect: marked down", suspects: 2, wantDown: 2},
		{name: "three of four suspect: none", suspects: 3, wantDown: 0},
		{name: "all four suspect: none", suspects: 4, wantDown: 0},
		{name: "all four suspect, fencing off: none", suspects: 4, noFence: true, wantDown: 0},
	}
	_, cli := embeddedtest.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := fleetstore.New(cli, fleetstore.NewKeys(fmt.Sprintf("/judge%d/", i)))
			lease, err := cli.Grant(ctx, 60)
			if err != nil {
				t.Fatal(err)
			}
			var views []registry.WorkerView
			state := map[string]*probeState{}
			for w := range 4 {
				id := fmt.Sprintf("w%d", w)
				if err := store.PutWorker(ctx, &fleetv1.Worker{Id: id}, lease.ID); err != nil {
					t.Fatal(err)
				}
				views = append(views, registry.WorkerView{Worker: &fleetv1.Worker{Id: id}, Lease: lease.ID})
				state[id] = &probeState{lease: int64(lease.ID), lastAnswer: time.Now().Add(-5 * time.Second), failures: 10}
			}
			s := New(Options{Store: store, Confirm: reachable{}, NoFence: tt.noFence, Log: slog.New(slog.DiscardHandler)})
			s.judge(ctx, views[:tt.suspects], len(views), state, time.Now())
			resp, err := cli.Get(ctx, store.Keys().Healths(), clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if int(resp.Count) != tt.wantDown {
				t.Errorf("%d workers marked down, want %d", resp.Count, tt.wantDown)
			}
			if ttl, err := cli.TimeToLive(ctx, lease.ID); err != nil || ttl.TTL <= 0 {
				t.Errorf("the workers' lease was revoked (ttl %v, %v): a reachable suspect is never fenced", ttl, err)
			}
		})
	}
}
