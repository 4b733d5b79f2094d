package replica_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

func TestMain(m *testing.M) { testfleet.VerifyTestMain(m) }

// slotWatcher follows every slot key change from a revision on and records
// the highest number of slots any GPU held at any revision.
type slotWatcher struct {
	mu      sync.Mutex
	held    map[string]map[string]bool // "worker/gpu" → slot keys
	maxHeld map[string]int
}

func (w *slotWatcher) apply(f *testfleet.Fleet, resp clientv3.WatchResponse) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range resp.Events {
		pk, err := f.Store.Keys().Parse(string(ev.Kv.Key))
		if err != nil {
			continue
		}
		gpu := fmt.Sprintf("%s/%d", pk.Worker, pk.GPU)
		if w.held[gpu] == nil {
			w.held[gpu] = map[string]bool{}
		}
		if ev.Type == mvccpb.PUT {
			w.held[gpu][string(ev.Kv.Key)] = true
		} else {
			delete(w.held[gpu], string(ev.Kv.Key))
		}
	}
	// One watch response carries whole transactions: check after each.
	for gpu, keys := range w.held {
		w.maxHeld[gpu] = max(w.maxHeld[gpu], len(keys))
	}
}

func watchSlots(ctx context.Context, t *testing.T, f *testfleet.Fleet) (*slotWatcher, func()) {
	t.Helper()
	w := &slotWatcher{held: map[string]map[string]bool{}, maxHeld: map[string]int{}}
	resp, err := f.Client.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		next := resp.Header.Revision
		// etcd ends a watch whose auth token a lagging member does not
		// know yet (the storm makes members lag): resume where it ended.
		for wctx.Err() == nil {
			wch := f.Client.Watch(wctx, f.Store.Keys().Slots(), clientv3.WithPrefix(), clientv3.WithRev(next))
			for resp := range wch {
				if resp.Err() != nil {
					break
				}
				w.apply(f, resp)
				next = resp.Header.Revision + 1
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return w, func() { cancel(); <-done }
}

// TestPlacementStorm: three replicas place hundreds of concurrent creates on
// a 3-member etcd cluster. Every create is answered 201 or 503, the 201s
// match the fleet's slots exactly, no GPU ever holds more than its slots,
// and deleting everything leaves no slot key.
func TestPlacementStorm(t *testing.T) {
	const (
		workers, gpus, slots = 4, 2, 3
		totalSlots           = workers * gpus * slots
		creates              = 300
	)
	var specs []testfleet.WorkerSpec
	for i := range workers {
		specs = append(specs, testfleet.WorkerSpec{ID: fmt.Sprintf("w%d", i), GPUs: gpus, SlotsPerGPU: slots})
	}
	// The storm is not about loss: leases longer than the default 2s keep
	// a busy machine (race detector, etcd authenticating every request)
	// from losing a worker in the middle of it.
	// Failure detection runs at its defaults (probes every 250 ms, suspect
	// after 1 s of silence, fence when confirmed): the storm must not make
	// it fence a live worker.
	var fences sync.Map
	f := testfleet.Start(t, testfleet.Options{EtcdMembers: 3, Replicas: 3, Workers: specs,
		WorkerLeaseTTL: 10 * time.Second, Supervisor: supervisor.Options{ElectionTTL: 10 * time.Second,
			HealthInterval: 250 * time.Millisecond, OnFence: func(id string) { fences.Store(id, true) }}})
	ctx := context.Background()
	watcher, stopWatch := watchSlots(ctx, t, f)
	leases := map[string]clientv3.LeaseID{}
	for _, w := range f.Replicas[0].Registry().Workers() {
		leases[w.Worker.GetId()] = w.Lease
	}
	defer func() {
		// No worker was fenced or lost its lease (a false suspicion would
		// have it registered again under a new one).
		fences.Range(func(id, _ any) bool {
			t.Errorf("worker %s fenced during the storm", id)
			return true
		})
		for id, lease := range leases {
			if w, ok := f.Replicas[0].Registry().Worker(id); !ok || w.Lease != lease {
				t.Errorf("worker %s lost its lease %x during the storm (now %x, registered %v)", id, lease, w.Lease, ok)
			}
		}
	}()

	type result struct {
		status  int
		id      string
		code    string
		retryAt string
	}
	results := make([]result, creates)
	var wg sync.WaitGroup
	for i := range creates {
		wg.Go(func() {
			r, err := f.Do(i%3, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			res := result{status: r.Status, retryAt: r.Header.Get("Retry-After")}
			switch r.Status {
			case 201:
				var s apiv1.Session
				r.JSON(t, &s)
				res.id = s.ID
				if s.State != apiv1.StateReady {
					t.Errorf("created session %s is %s, want ready", s.ID, s.State)
				}
			default:
				var e apiv1.ErrorBody
				r.JSON(t, &e)
				res.code = e.Error.Code
			}
			results[i] = res
		})
	}
	wg.Wait()

	created := map[string]bool{}
	for i, r := range results {
		switch r.status {
		case 201:
			if created[r.id] {
				t.Errorf("session %s created twice", r.id)
			}
			created[r.id] = true
		case 503:
			if r.code != apiv1.CodeNoCapacity || r.retryAt == "" {
				t.Errorf("create %d: 503 with code %q, Retry-After %q", i, r.code, r.retryAt)
			}
		default:
			t.Errorf("create %d: status %d (%s), want 201 or 503", i, r.status, r.code)
		}
	}
	if len(created) != totalSlots {
		t.Errorf("%d creates succeeded, want exactly the %d slots", len(created), totalSlots)
	}
	perGPU, total, err := f.SlotKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if total != totalSlots {
		t.Errorf("%d slot keys in etcd, want %d", total, totalSlots)
	}
	for w, gs := range perGPU {
		for g, n := range gs {
			if n > slots {
				t.Errorf("worker %s GPU %d holds %d sessions, more than its %d slots", w, g, n, slots)
			}
		}
	}
	running := 0
	for i := range workers {
		running += len(f.Worker(fmt.Sprintf("w%d", i)).Agent.Runtime().Sessions())
	}
	if running != totalSlots {
		t.Errorf("workers run %d sessions, want %d", running, totalSlots)
	}

	// Delete everything, concurrently, through every replica.
	for id := range created {
		wg.Go(func() {
			r, err := f.Do(len(id)%3, "DELETE", "/v1/sessions/"+id, testfleet.SessionsKey, nil)
			if err != nil || r.Status != 204 {
				t.Errorf("delete %s: %v %d %s", id, err, r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	if _, total, err = f.SlotKeys(ctx); err != nil || total != 0 {
		t.Errorf("%d slot keys left after deleting every session (err %v)", total, err)
	}
	for id := range created {
		s, _, err := f.Store.Session(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if s.GetEndReason().String() != "END_REASON_DELETED" {
			t.Errorf("session %s ended with %s, want deleted", id, s.GetEndReason())
		}
	}
	f.Eventually(10*time.Second, "workers stop every session", func() bool {
		for i := range workers {
			if len(f.Worker(fmt.Sprintf("w%d", i)).Agent.Runtime().Sessions()) != 0 {
				return false
			}
		}
		return true
	})

	stopWatch()
	watcher.mu.Lock()
	defer watcher.mu.Unlock()
	if len(watcher.maxHeld) != workers*gpus {
		t.Errorf("watch saw %d GPUs with sessions, want %d", len(watcher.maxHeld), workers*gpus)
	}
	for gpu, n := range watcher.maxHeld {
		if n > slots {
			t.Errorf("GPU %s held %d sessions at some revision, more than its %d slots", gpu, n, slots)
		}
	}
}
