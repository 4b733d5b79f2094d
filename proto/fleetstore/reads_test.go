package fleetstore_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// TestSlotOwnerAtNeedsNoLeader: on a member that has applied a
// reservation, SlotOwnerAt answers who holds the slot even while the
// cluster has no leader (two of three members stopped), where SlotOwner,
// which reads through the leader, cannot; asked about a revision the
// member has not reached, it reads through the leader too.
func TestSlotOwnerAtNeedsNoLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{Dir: t.TempDir(), Members: 3, NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cli, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := fleetstore.New(cli, fleetstore.NewKeys("/test/"))
	lease, wrev := registerWorker(t, s, cli, "w1")
	sess := &fleetv1.Session{Id: "sess_a", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	rev, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: wrev, Slot: 1}, sess)
	if err != nil || !ok {
		t.Fatalf("reserve: %v %v", ok, err)
	}

	// Keep the member that is not the leader and has applied the
	// reservation; stop the other two: no quorum, no leader.
	keep := (cluster.Leader() + 1) % 3
	deadline := time.Now().Add(10 * time.Second)
	for cluster.Member(keep).Server.KV().Rev() < rev {
		if time.Now().After(deadline) {
			t.Fatalf("member %d never applied revision %d", keep, rev)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 3 {
		if i != keep {
			cluster.StopMember(i)
		}
	}
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{cluster.Endpoints()[keep]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	alone := fleetstore.New(one, fleetstore.NewKeys("/test/"))

	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	defer rcancel()
	if owner, err := alone.SlotOwnerAt(rctx, "w1", 0, 1, rev); err != nil || owner != "sess_a" {
		t.Fatalf("SlotOwnerAt without a leader: %q, %v; want sess_a", owner, err)
	}
	if owner, err := alone.SlotOwnerAt(rctx, "w1", 0, 0, rev); err != nil || owner != "" {
		t.Fatalf("SlotOwnerAt of a free slot: %q, %v", owner, err)
	}
	lctx, lcancel := context.WithTimeout(ctx, time.Second)
	defer lcancel()
	if owner, err := alone.SlotOwner(lctx, "w1", 0, 1); err == nil {
		t.Fatalf("SlotOwner answered %q without a leader: the test cannot tell the reads apart", owner)
	}
	fctx, fcancel := context.WithTimeout(ctx, time.Second)
	defer fcancel()
	if owner, err := alone.SlotOwnerAt(fctx, "w1", 0, 1, rev+1000); err == nil {
		t.Fatalf("SlotOwnerAt of a revision the member has not reached answered %q from its own state", owner)
	}
}
