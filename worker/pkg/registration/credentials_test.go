package registration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/slotwatch"
)

// TestWorkerRunsWithItsOwnCredentials runs the worker's real registration,
// slot watch and event publisher with a worker's etcd role and NATS
// permissions only, against an etcd with authentication on and a NATS that
// refuses anonymous clients.
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
	etcdAs := func(cfg fleetconn.EtcdConfig) *fleetstore.Store {
		cli, err := fleetconn.Etcd(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.Close() })
		return fleetstore.New(cli, keys)
	}
	if err := fleetstore.SetupAuth(ctx, etcdAs(fleetconn.EtcdConfig{Endpoints: cluster.Endpoints()}).Client(), keys, etcdSecrets.Auth(id)); err != nil {
		t.Fatal(err)
	}
	cp := etcdAs(etcdSecrets.ControlPlaneConfig(cluster.Endpoints()))
	worker := etcdAs(etcdSecrets.WorkerConfig(cluster.Endpoints(), id))

	secrets, err := embedded.LoadNATSSecrets(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: t.TempDir(), Auth: secrets.Auth()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	natsAs := func(cfg fleetconn.NATSConfig, errs chan<- error) *nats.Conn {
		nc, err := fleetconn.NATS(cfg, nats.NoReconnect(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	cpErrs, workerErrs := make(chan error, 8), make(chan error, 8)
	cpNC := natsAs(secrets.ControlPlaneConfig(ns.URL()), cpErrs)
	cpPub, err := fleetbus.NewPublisher(cpNC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fleetbus.EnsureStream(ctx, cpPub.JetStream(), time.Hour); err != nil {
		t.Fatal(err)
	}
	events, err := cpNC.SubscribeSync(fleetbus.WorkerSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	if err := cpNC.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := fleetbus.NewPublisher(natsAs(secrets.WorkerConfig(ns.URL(), id), workerErrs), fleetbus.AsWorker(id))
	if err != nil {
		t.Fatal(err)
	}
	nextEvent := func(want string) {
		t.Helper()
		m, err := events.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		e, err := fleetbus.DecodeEvent(m.Data)
		if err != nil || e.GetType() != want {
			t.Fatalf("event %v (%v), want %s", e, err, want)
		}
	}

	// A long lease: under the race detector, authenticated etcd on a busy
	// machine is slow, and this test is not about expiry.
	r, err := New(Config{Store: worker, Publisher: pub, TTL: 10 * time.Second,
		Worker: &fleetv1.Worker{Id: id, Gpus: []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 2, Cpu: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Abandon)
	if err := r.Register(ctx); err != nil {
		t.Fatalf("register with the worker's role: %v", err)
	}
	nextEvent(fleetbus.WorkerRegistered)

	// The slot watch sees the control plane's reservation go.
	stopped := make(chan string, 1)
	w := slotwatch.New(worker, id, func(_ context.Context, sessionID string, _ fleetv1.EndReason) { stopped <- sessionID }, nil)
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(wctx) })
	defer func() { stopWatch(); wg.Wait() }()
	rec, err := cp.Client().Get(ctx, keys.Worker(id))
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
	nextEvent(fleetbus.WorkerDraining)
	if err := r.Deregister(ctx); err != nil {
		t.Fatalf("deregister with the worker's role: %v", err)
	}
	nextEvent(fleetbus.WorkerDeregistered)
	if resp, err := cp.Client().Get(ctx, keys.Worker(id)); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("record after deregistration: %v, %v", resp, err)
	}
	for _, errs := range []chan error{cpErrs, workerErrs} {
		select {
		case err := <-errs:
			t.Fatalf("NATS refused something the roles allow: %v", err)
		default:
		}
	}
}
