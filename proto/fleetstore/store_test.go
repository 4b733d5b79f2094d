package fleetstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/embedded/embeddedtest"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m),
		// Peer HTTP connections between etcd members, client and server
		// side, that outlive a member TestSlotOwnerAtNeedsNoLeader stops
		// while the others run (etcd's raft transport and peer handler
		// let go of them only with the process). fleetstore itself
		// speaks no HTTP.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"),
	)
}

func startStore(t *testing.T) (*fleetstore.Store, *clientv3.Client) {
	t.Helper()
	_, cli := embeddedtest.Etcd(t)
	return fleetstore.New(cli, fleetstore.NewKeys("/test/")), cli
}

// registerWorker writes a worker record under a fresh lease, as a worker does.
func registerWorker(t *testing.T, s *fleetstore.Store, cli *clientv3.Client, id string) (clientv3.LeaseID, int64) {
	t.Helper()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	w := &fleetv1.Worker{Id: id, State: fleetv1.WorkerState_WORKER_STATE_ACTIVE, Gpus: []*fleetv1.GPU{{Index: 0, Slots: 2}}}
	if err := s.PutWorker(ctx, w, lease.ID); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, s.Keys().Worker(id))
	if err != nil {
		t.Fatal(err)
	}
	return lease.ID, resp.Kvs[0].ModRevision
}

func TestReserveOneSlotOnceUnderContention(t *testing.T) {
	s, cli := startStore(t)
	lease, rev := registerWorker(t, s, cli, "w1")
	const racers = 32
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			sess := &fleetv1.Session{Id: fmt.Sprintf("s%d", i), State: fleetv1.SessionState_SESSION_STATE_STARTING}
			_, ok, err := s.Reserve(context.Background(), fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev, GPU: 0, Slot: 1}, sess)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d reservations of one slot succeeded, want exactly 1", wins.Load())
	}
	resp, err := cli.Get(context.Background(), s.Keys().Slots(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != lease {
		t.Fatalf("slot keys %v: want one, under the worker's lease", resp.Kvs)
	}
}

func TestReserveRefusesDrainedDownOrChangedWorker(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		setup func(id string, lease clientv3.LeaseID) // makes the reservation invalid
	}{
		{"drained", func(id string, _ clientv3.LeaseID) {
			if err := s.SetDrained(ctx, id, true); err != nil {
				t.Fatal(err)
			}
		}},
		{"down", func(id string, lease clientv3.LeaseID) {
			if err := s.SetDown(ctx, id, lease, true); err != nil {
				t.Fatal(err)
			}
		}},
		{"record changed", func(id string, lease clientv3.LeaseID) {
			w := &fleetv1.Worker{Id: id, State: fleetv1.WorkerState_WORKER_STATE_DRAINING}
			if err := s.PutWorker(ctx, w, lease); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("w%d", i)
			lease, rev := registerWorker(t, s, cli, id)
			tt.setup(id, lease)
			sess := &fleetv1.Session{Id: "s-" + id}
			_, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: id, WorkerLease: lease, WorkerRevision: rev}, sess)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				t.Fatal("reservation succeeded")
			}
		})
	}
}

func TestEndSessionExactlyOnce(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease, rev := registerWorker(t, s, cli, "w1")
	sess := &fleetv1.Session{Id: "s1", State: fleetv1.SessionState_SESSION_STATE_READY}
	if _, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev}, sess); err != nil || !ok {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	reasons := []fleetv1.EndReason{fleetv1.EndReason_END_REASON_DELETED, fleetv1.EndReason_END_REASON_WORKER_LOST, fleetv1.EndReason_END_REASON_ERROR}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			_, ended, err := s.EndSession(ctx, "s1", fleetv1.SessionState_SESSION_STATE_ENDED, reasons[i%3], "")
			if err != nil {
				t.Error(err)
			}
			if ended {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d enders won, want 1", wins.Load())
	}
	got, _, err := s.Session(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if !fleetstore.Terminal(got.GetState()) || got.GetEndReason() == fleetv1.EndReason_END_REASON_UNSPECIFIED || got.GetEndedAt() == nil {
		t.Fatalf("ended record %v lacks state, reason or time", got)
	}
	slots, _ := cli.Get(ctx, s.Keys().Slots(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if slots.Count != 0 {
		t.Fatalf("%d slot keys left after end", slots.Count)
	}
}

// Ending a session must never free a slot that another session holds now.
func TestEndSessionKeepsAnotherSessionsSlot(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease, rev := registerWorker(t, s, cli, "w1")
	res := fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev}
	if _, ok, err := s.Reserve(ctx, res, &fleetv1.Session{Id: "old"}); err != nil || !ok {
		t.Fatal("reserve old", ok, err)
	}
	// The slot is lost (lease-less delete stands in for a lease expiry) and
	// taken by a new session before the old one's record is ended.
	if _, err := cli.Delete(ctx, s.Keys().Slot("w1", 0, 0)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Reserve(ctx, res, &fleetv1.Session{Id: "new"}); err != nil || !ok {
		t.Fatal("reserve new", ok, err)
	}
	if _, ended, err := s.EndSession(ctx, "old", fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_WORKER_LOST, ""); err != nil || !ended {
		t.Fatal("end old", ended, err)
	}
	resp, err := cli.Get(ctx, s.Keys().Slot("w1", 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "new" {
		t.Fatalf("slot now %v, want held by new", resp.Kvs)
	}
}

func TestSlotsVanishWithWorkerLease(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease, rev := registerWorker(t, s, cli, "w1")
	if _, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev}, &fleetv1.Session{Id: "s1"}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, s.Keys().Fleet(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("%d fleet keys survive the worker's lease", resp.Count)
	}
	// The session record is not lease-bound: the supervisor fails it.
	if _, _, err := s.Session(ctx, "s1"); err != nil {
		t.Fatalf("session record gone with the lease: %v", err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	s, _ := startStore(t)
	ctx := context.Background()
	bound, claimed, err := s.ClaimIdempotencyKey(ctx, "owner", "k1", "s1", time.Minute)
	if err != nil || !claimed || bound != "s1" {
		t.Fatalf("first claim = %q %v %v", bound, claimed, err)
	}
	bound, claimed, err = s.ClaimIdempotencyKey(ctx, "owner", "k1", "s2", time.Minute)
	if err != nil || claimed || bound != "s1" {
		t.Fatalf("second claim = %q %v %v, want bound to s1", bound, claimed, err)
	}
	if _, claimed, _ = s.ClaimIdempotencyKey(ctx, "other-owner", "k1", "s3", time.Minute); !claimed {
		t.Fatal("keys of different owners collide")
	}
	if err := s.ReleaseIdempotencyKey(ctx, "owner", "k1", "s2"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.IdempotencyBinding(ctx, "owner", "k1"); got != "s1" {
		t.Fatalf("release by a non-holder unbound the key (now %q)", got)
	}
	if err := s.ReleaseIdempotencyKey(ctx, "owner", "k1", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, claimed, _ = s.ClaimIdempotencyKey(ctx, "owner", "k1", "s4", time.Minute); !claimed {
		t.Fatal("released key cannot be claimed again")
	}
}
