package registry

import (
	"context"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/embedded/embeddedtest"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The cache follows workers, slots, drain and health marks as etcd changes.
func TestRegistryFollowsTheFleet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, cli := embeddedtest.Etcd(t)
	store := fleetstore.New(cli, fleetstore.NewKeys("/reg/"))
	keys := store.Keys()

	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	w := &fleetv1.Worker{Id: "w1", Gpus: []*fleetv1.GPU{{Index: 0, Slots: 3}, {Index: 1, Slots: 3}}}
	if err := store.PutWorker(ctx, w, lease.ID); err != nil {
		t.Fatal(err)
	}
	// One slot exists before the registry starts (listing), one after (watch).
	if _, err := cli.Put(ctx, keys.Slot("w1", 0, 0), "s0", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	r := New(store, slog.New(slog.DiscardHandler))
	gone := make(chan string, 4)
	r.OnWorkerGone(func(id string) { gone <- id })
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-r.Synced()

	if _, err := cli.Put(ctx, keys.Slot("w1", 0, 2), "s2", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two slots used on GPU 0", func() bool {
		v, ok := r.Worker("w1")
		return ok && v.UsedOn(0) == 2 && v.UsedOn(1) == 0 && v.Sessions == 2
	})
	if s, ok := r.FreeSlot("w1", 0, 3, 0, func(uint32) bool { return false }); !ok || s != 1 {
		t.Fatalf("FreeSlot on GPU 0 = %d, %v; want slot 1", s, ok)
	}
	if _, ok := r.FreeSlot("w1", 0, 3, 0, func(s uint32) bool { return s == 1 }); ok {
		t.Fatal("FreeSlot returned a skipped slot")
	}

	if err := store.SetDrained(ctx, "w1", true); err != nil {
		t.Fatal(err)
	}
	if err := store.SetDown(ctx, "w1", lease.ID, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "drained and down", func() bool {
		v, _ := r.Worker("w1")
		return v.Drained && v.Down && v.Draining()
	})
	if _, err := cli.Delete(ctx, keys.Slot("w1", 0, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "slot 0 released", func() bool {
		v, _ := r.Worker("w1")
		return v.UsedOn(0) == 1 && v.Sessions == 1
	})
	// The worker's lease ends: record, slots and down mark go together; the
	// admin's drain mark (no lease) stays, but no worker is listed.
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "worker gone", func() bool {
		_, ok := r.Worker("w1")
		return !ok && len(r.Workers()) == 0
	})
	select {
	case id := <-gone:
		if id != "w1" {
			t.Fatalf("OnWorkerGone(%q), want w1", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnWorkerGone not called for a revoked worker")
	}
}
