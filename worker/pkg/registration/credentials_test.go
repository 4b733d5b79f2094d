package registration

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/slotwatch"
)

// TestWorkerRunsWithItsOwnCredentials runs the worker's real registration
// and slot watch with a worker's etcd role only, against an etcd with
// authentication on. (Worker lifecycle events derive from etcd now; the
// worker publishes none.)
func TestWorkerRunsWithItsOwnCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const id = "gpu.node-1"
	keys := fleetstore.NewKeys("/secured/")
	dataDir := t.TempDir()
	etcdSecrets, err := embedded.LoadEtcdSecrets(dataDir)
	if err != nil {
		t.Fatal(err)
	}

	cluster, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{Dir: t.TempDir(), NoFsync: true, BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	clientAs := func(cfg fleetconn.EtcdConfig) *clientv3.Client {
		cli, err := fleetconn.Etcd(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.Close() })
		return cli
	}
	if err := fleetstore.SetupAuth(ctx, clientAs(fleetconn.EtcdConfig{Endpoints: cluster.Endpoints()}), keys, etcdSecrets.Auth(id)); err != nil {
		t.Fatal(err)
	}
	cpCli := clientAs(etcdSecrets.ControlPlaneConfig(cluster.Endpoints()))
	cp := fleetstore.New(cpCli, keys)
	worker := fleetstore.New(clientAs(etcdSecrets.WorkerConfig(cluster.Endpoints(), id)), keys)

	// A long lease: under the race detector, authenticated etcd on a busy
	// machine is slow, and this test is not about expiry.
	r, err := New(Config{Store: worker, TTL: 10 * time.Second,
		Worker: &fleetv1.Worker{Id: id, Gpus: []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 2, Cpu: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Abandon)
	if err := r.Register(ctx); err != nil {
		t.Fatalf("register with the worker's role: %v", err)
	}

	// The slot watch sees the control plane's reservation go.
	stopped := make(chan string, 1)
	w := slotwatch.New(worker, id, func(_ context.Context, sessionID string, _ fleetv1.EndReason) { stopped <- sessionID }, nil)
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	defer func() { stopWatch(); wg.Wait() }()
	rec, err := cpCli.Get(ctx, keys.Worker(id))
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatalf("control plane reads the worker: %v", err)
	}
	if _, ok, err := cp.Reserve(ctx, fleetstore.Reservation{Worker: id, WorkerLease: r.Lease(), WorkerRevision: rec.Kvs[0].ModRevision},
		&fleetv1.Session{Id: "s1", Owner: "o"}); err != nil || !ok {
		t.Fatalf("reserve: ok=%v err=%v", ok, err)
	}
	if !w.TrackIfHeld("s1", 0, 0) {
		if owner, err := w.Owner(ctx, 0, 0); err != nil || owner != "s1" {
			t.Fatalf("worker reads its slot: %q, %v", owner, err)
		}
		w.Track("s1", 0, 0)
	}
	if _, ended, err := cp.EndSession(ctx, "s1", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil || !ended {
		t.Fatalf("end: %v %v", ended, err)
	}
	fleettest.Eventually(t, 20*time.Second, "the worker to stop s1", func() bool {
		select {
		case got := <-stopped:
			return got == "s1"
		default:
			return false
		}
	})

	if err := r.SetState(ctx, fleetv1.WorkerState_WORKER_STATE_DRAINING); err != nil {
		t.Fatalf("drain with the worker's role: %v", err)
	}
	if err := r.Deregister(ctx); err != nil {
		t.Fatalf("deregister with the worker's role: %v", err)
	}
	if resp, err := cpCli.Get(ctx, keys.Worker(id)); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("record after deregistration: %v, %v", resp, err)
	}
}
