package registration

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
)

var servers *fleettest.Servers

func TestMain(m *testing.M) { fleettest.Main(m, &servers) }

func newRegistrar(t *testing.T, store *fleetstore.Store, id string, idWait time.Duration) *Registrar {
	t.Helper()
	r, err := New(Config{
		Store: store,
		Worker: &fleetv1.Worker{
			Id:          id,
			GrpcAddress: "127.0.0.1:9090",
			Gpus:        []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 2, Cpu: true}},
			Version:     "test",
		},
		TTL:    2 * time.Second,
		IDWait: idWait,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the test did, leave no keep-alive running.
	t.Cleanup(r.Abandon)
	return r
}

// readRecord returns the worker record and the lease it is stored under.
func readRecord(t *testing.T, store *fleetstore.Store, id string) (*fleetv1.Worker, clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := servers.ClientOf(store).Get(t.Context(), store.Keys().Worker(id))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, false
	}
	w, err := fleetstore.DecodeWorker(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return w, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func TestRegisterWritesRecordUnderLeaseAndDeregisterRemovesIt(t *testing.T) {
	store := servers.Store(t)
	id := servers.Name(t, "w")
	r := newRegistrar(t, store, id, 0)

	if err := r.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	w, lease, ok := readRecord(t, store, id)
	if !ok {
		t.Fatal("no worker record after Register")
	}
	if lease == clientv3.NoLease || lease != r.Lease() {
		t.Fatalf("record under lease %x, registrar holds %x", lease, r.Lease())
	}
	if w.GetState() != fleetv1.WorkerState_WORKER_STATE_ACTIVE || w.GetGrpcAddress() != "127.0.0.1:9090" || w.GetStartedAt() == nil {
		t.Fatalf("record = %v", w)
	}
	ttl, err := servers.ClientOf(store).TimeToLive(t.Context(), lease)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease TTL = %v, %v", ttl, err)
	}

	// A slot reserved under the lease must vanish with it.
	slot := store.Keys().Slot(id, 0, 0)
	if _, err := servers.ClientOf(store).Put(t.Context(), slot, "s1", clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := readRecord(t, store, id); ok {
		t.Fatal("worker record still there after Deregister")
	}
	if resp, _ := servers.ClientOf(store).Get(t.Context(), slot); len(resp.Kvs) != 0 {
		t.Fatal("slot key still there after Deregister")
	}
	select {
	case <-r.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed after Deregister")
	}
	if err := r.Deregister(t.Context()); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	if err := r.SetState(t.Context(), fleetv1.WorkerState_WORKER_STATE_DRAINING); !errors.Is(err, ErrDeregistered) {
		t.Fatalf("SetState after Deregister = %v, want ErrDeregistered", err)
	}
}

func TestRevokedLeaseClosesDoneAndReregisters(t *testing.T) {
	store := servers.Store(t)
	id := servers.Name(t, "w")
	r := newRegistrar(t, store, id, 0)
	if err := r.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := r.SetState(t.Context(), fleetv1.WorkerState_WORKER_STATE_DRAINING); err != nil {
		t.Fatal(err)
	}
	first := r.Lease()
	firstDone := r.Done()

	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu   sync.Mutex
		lost []clientv3.LeaseID
	)
	keepDone := make(chan error, 1)
	go func() {
		keepDone <- r.KeepRegistered(ctx, func(_ context.Context, l clientv3.LeaseID) {
			mu.Lock()
			lost = append(lost, l)
			mu.Unlock()
		})
	}()

	// Another party (an operator, a partition healing late) kills the lease.
	if _, err := servers.EtcdClient(t).Revoke(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	select {
	case <-firstDone:
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the lease was revoked")
	}
	fleettest.Eventually(t, 5*time.Second, "registration under a new lease", func() bool {
		_, lease, ok := readRecord(t, store, id)
		return ok && lease != first
	})
	w, lease, ok := readRecord(t, store, id)
	if !ok || lease == first || lease != r.Lease() {
		t.Fatalf("after re-registration: record present=%v under %x; first %x, current %x", ok, lease, first, r.Lease())
	}
	if w.GetState() != fleetv1.WorkerState_WORKER_STATE_DRAINING {
		t.Fatalf("re-registered state = %s, want the draining state kept", w.GetState())
	}
	mu.Lock()
	if len(lost) != 1 || lost[0] != first {
		t.Fatalf("onLost calls = %v, want [%x]", lost, first)
	}
	mu.Unlock()

	cancel()
	if err := <-keepDone; err != nil {
		t.Fatalf("KeepRegistered: %v", err)
	}
	if err := r.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestDuplicateIDIsRefused(t *testing.T) {
	store := servers.Store(t)
	id := servers.Name(t, "w")
	a := newRegistrar(t, store, id, 0)
	if err := a.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	b := newRegistrar(t, store, id, 500*time.Millisecond)
	if err := b.Register(t.Context()); !errors.Is(err, ErrIDInUse) {
		t.Fatalf("second worker with the same id: %v, want ErrIDInUse", err)
	}
	// Once the first one is gone the id is free again.
	if err := a.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(t.Context()); err != nil {
		t.Fatalf("register after the first deregistered: %v", err)
	}
	if err := b.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestAbandonLeavesLeaseToExpire(t *testing.T) {
	store := servers.Store(t)
	id := servers.Name(t, "w")
	r := newRegistrar(t, store, id, 0)
	if err := r.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.Abandon()
	if _, _, ok := readRecord(t, store, id); !ok {
		t.Fatal("Abandon removed the record at once; it should expire with the lease")
	}
	fleettest.Eventually(t, 6*time.Second, "record to expire with the lease", func() bool {
		_, _, ok := readRecord(t, store, id)
		return !ok
	})
}

func TestNewValidates(t *testing.T) {
	store := servers.Store(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no store", Config{Worker: &fleetv1.Worker{Id: "w1"}, TTL: time.Second}},
		{"no record", Config{Store: store, TTL: time.Second}},
		{"bad id", Config{Store: store, Worker: &fleetv1.Worker{Id: "a/b"}, TTL: time.Second}},
		{"ttl too short", Config{Store: store, Worker: &fleetv1.Worker{Id: "w1"}, TTL: 500 * time.Millisecond}},
		{"ttl fractional", Config{Store: store, Worker: &fleetv1.Worker{Id: "w1"}, TTL: 1500 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}
