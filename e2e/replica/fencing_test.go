package replica_test

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/pkg/v3/proxy"
	"go.uber.org/zap"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// workerRecordGone waits until worker id's record is gone from etcd and
// returns when that was seen (sampled every 10 ms).
func workerRecordGone(t *testing.T, f *testfleet.Fleet, id string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		resp, err := f.Client.Get(ctx, f.Store.Keys().Worker(id))
		cancel()
		if err == nil && len(resp.Kvs) == 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %s still registered %s on", id, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKilledWorkerIsFencedWithinSeconds: a worker that dies (no drain, no
// deregistration) is found dead by the leader's probes and fenced: its
// lease is revoked, so its record and slot keys vanish long before its
// 10 s lease could expire.
func TestKilledWorkerIsFencedWithinSeconds(t *testing.T) {
	var mu sync.Mutex
	fenced := map[string]time.Time{}
	f := testfleet.Start(t, testfleet.Options{
		Workers:        []testfleet.WorkerSpec{{ID: "a"}, {ID: "b"}},
		WorkerLeaseTTL: 10 * time.Second,
		Supervisor: supervisor.Options{HealthInterval: 250 * time.Millisecond, OnFence: func(id string) {
			mu.Lock()
			fenced[id] = time.Now()
			mu.Unlock()
		}},
	})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	victim := s.WorkerID

	killed := time.Now()
	_ = f.KillWorker(victim) // Run's answer to an abort
	gone := workerRecordGone(t, f, victim, 8*time.Second)
	detected := gone.Sub(killed)
	t.Logf("kill → lease revoked (record gone): %s", detected.Round(time.Millisecond))
	if detected > 5*time.Second {
		t.Errorf("fenced %s after the kill; want about 1-2 s (lease TTL is 10 s)", detected)
	}
	// OnFence runs once the revoke has returned, which can be a moment
	// after the test saw the record go.
	fencedBy := func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := fenced[victim]
		return ok
	}
	for end := time.Now().Add(3 * time.Second); !fencedBy() && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if !fencedBy() {
		t.Errorf("worker %s vanished without being fenced by the leader", victim)
	}
	// Its slot went with the lease.
	perGPU, _, err := f.SlotKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(perGPU[victim]); n != 0 {
		t.Errorf("fenced worker %s still holds slot keys on %d GPUs", victim, n)
	}
	// The survivor was never suspected.
	if w, ok := f.Replicas[0].Registry().Worker(otherOf(victim)); !ok || w.Down {
		t.Errorf("survivor %s: registered %v, down %v", otherOf(victim), ok, w.Down)
	}
}

func otherOf(id string) string {
	if id == "a" {
		return "b"
	}
	return "a"
}

// etcdProxy starts a TCP proxy to etcd member 0 that a test can blackhole.
func etcdProxy(t *testing.T, f *testfleet.Fleet) (proxy.Server, string) {
	t.Helper()
	target, err := url.Parse(f.Etcd.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	p := proxy.NewServer(proxy.ServerConfig{
		Logger: zap.NewNop(),
		From:   url.URL{Scheme: "tcp", Host: addr},
		To:     url.URL{Scheme: "tcp", Host: target.Host},
	})
	select {
	case <-p.Ready():
	case err := <-p.Error():
		t.Fatalf("etcd proxy: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("etcd proxy not ready")
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, target.Scheme + "://" + addr
}

// TestWorkerPartitionedFromEtcdStopsServing: a worker cut off from etcd
// (its NATS and gRPC still up, so the leader's probes find it alive) loses
// its lease and must stop serving before etcd could let anyone else take
// its slots: it fences itself a margin before the lease's expiry. Sampled
// every 20 ms, no session ever runs on two workers, and the zombie runs
// nothing once its lease is gone. When the partition heals it registers
// again under a new lease and runs only what is placed on it afterwards (a
// lost session may be re-placed there).
func TestWorkerPartitionedFromEtcdStopsServing(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "y"}}})
	px, endpoint := etcdProxy(t, f)
	const ttl = 3 * time.Second
	z := f.StartWorker(testfleet.WorkerSpec{ID: "z", EtcdEndpoints: []string{endpoint}, LeaseTTL: ttl})
	zRecord, ok := f.Replicas[0].Registry().Worker("z")
	if !ok {
		t.Fatal("z not registered")
	}
	// Fill z (y is placed on too; spread puts sessions on both).
	for range 4 {
		createSession(t, f, 0, testfleet.SessionsKey)
	}
	if n := len(z.Agent.Runtime().Sessions()); n == 0 {
		t.Fatal("no session on z to fence")
	}

	// Sample every 20 ms: which sessions run where.
	var (
		mu       sync.Mutex
		doubled  []string
		zStopped time.Time
	)
	ctx, stopSampling := context.WithCancel(t.Context())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			onZ := z.Agent.Runtime().Sessions()
			onY := map[string]bool{}
			for _, id := range f.Worker("y").Agent.Runtime().Sessions() {
				onY[id] = true
			}
			mu.Lock()
			for _, id := range onZ {
				if onY[id] {
					doubled = append(doubled, id)
				}
			}
			if len(onZ) == 0 && zStopped.IsZero() {
				zStopped = time.Now()
			}
			mu.Unlock()
		}
	}()

	cut := time.Now()
	px.BlackholeTx()
	px.BlackholeRx()
	expired := workerRecordGone(t, f, "z", 3*ttl)
	// Give the sampler a moment past the expiry, then look.
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	stoppedAt := zStopped
	mu.Unlock()
	if stoppedAt.IsZero() {
		t.Fatalf("z still serves %v after its lease expired", z.Agent.Runtime().Sessions())
	}
	t.Logf("partition → zombie stopped serving: %s; → lease gone in etcd: %s (TTL %s)",
		stoppedAt.Sub(cut).Round(time.Millisecond), expired.Sub(cut).Round(time.Millisecond), ttl)
	if !stoppedAt.Before(expired) {
		t.Errorf("zombie stopped at +%s, not before its lease was gone at +%s", stoppedAt.Sub(cut), expired.Sub(cut))
	}

	// Healed: z registers again under a new lease and serves nothing old.
	px.UnblackholeTx()
	px.UnblackholeRx()
	healed := time.Now()
	f.Eventually(30*time.Second, "z registered again under a new lease", func() bool {
		w, ok := f.Replicas[0].Registry().Worker("z")
		return ok && w.Lease != zRecord.Lease
	})
	t.Logf("healed → z registered again: %s", time.Since(healed).Round(time.Millisecond))
	stopSampling()
	<-sampled
	mu.Lock()
	defer mu.Unlock()
	if len(doubled) > 0 {
		t.Errorf("sessions seen on two workers at once: %v", doubled)
	}
	// z may run sessions again, but only ones placed on it after it came
	// back (a lost session re-placed keeps its id): nothing it runs may be
	// recorded on another worker.
	for _, id := range z.Agent.Runtime().Sessions() {
		if s := getSession(t, f, 0, id); s.WorkerID != "z" {
			t.Errorf("z runs %s after it was fenced, but the session is placed on %q", id, s.WorkerID)
		}
	}
	// Stop z while its proxy still runs (cleanups close the proxy first).
	if err := f.StopWorker("z"); err != nil {
		t.Errorf("stop z: %v", err)
	}
}
