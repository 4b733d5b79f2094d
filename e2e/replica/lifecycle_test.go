package replica_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// eventLog collects the fleet's lifecycle events from NATS.
type eventLog struct {
	mu     sync.Mutex
	events []*fleetv1.Event
}

func subscribeEvents(t *testing.T, f *testfleet.Fleet) *eventLog {
	t.Helper()
	nc, err := fleetconn.NATS(f.ControlPlaneNATS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l := &eventLog{}
	if _, err := nc.Subscribe(fleetbus.EventsAll, func(m *nats.Msg) {
		e, err := fleetbus.DecodeEvent(m.Data)
		if err != nil {
			t.Errorf("undecodable event on %s: %v", m.Subject, err)
			return
		}
		l.mu.Lock()
		l.events = append(l.events, e)
		l.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *eventLog) has(match func(*fleetv1.Event) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if match(e) {
			return true
		}
	}
	return false
}

func createSession(t *testing.T, f *testfleet.Fleet, replica int, key string) apiv1.Session {
	t.Helper()
	return createSessionWith(t, f, replica, key, apiv1.CreateSessionRequest{})
}

func createSessionWith(t *testing.T, f *testfleet.Fleet, replica int, key string, req apiv1.CreateSessionRequest) apiv1.Session {
	t.Helper()
	r := f.MustDo(replica, "POST", "/v1/sessions", key, req)
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var s apiv1.Session
	r.JSON(t, &s)
	return s
}

func getSession(t *testing.T, f *testfleet.Fleet, replica int, id string) apiv1.Session {
	t.Helper()
	r := f.MustDo(replica, "GET", "/v1/sessions/"+id, testfleet.AdminKey, nil)
	if r.Status != 200 {
		t.Fatalf("get %s: %d %s", id, r.Status, r.Body)
	}
	var s apiv1.Session
	r.JSON(t, &s)
	return s
}

// TestWorkerLost covers both ways a worker goes: its process dies (its lease
// then expires) or its lease is revoked. Its slots disappear, its sessions
// (restart_policy never; re-placement is tested in the supervisor's
// package) fail with worker_lost and events say so; the other worker's
// sessions live.
func TestWorkerLost(t *testing.T) {
	for _, how := range []string{"killed", "lease revoked"} {
		t.Run(how, func(t *testing.T) {
			f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "doomed"}, {ID: "survivor"}}})
			events := subscribeEvents(t, f)
			ctx := context.Background()
			var mine, theirs []apiv1.Session
			for range 4 { // 2 workers × 2 slots: fills both
				s := createSessionWith(t, f, 0, testfleet.SessionsKey, apiv1.CreateSessionRequest{RestartPolicy: apiv1.RestartNever})
				if s.WorkerID == "doomed" {
					mine = append(mine, s)
				} else {
					theirs = append(theirs, s)
				}
			}
			if len(mine) != 2 || len(theirs) != 2 {
				t.Fatalf("placement put %d/%d sessions on doomed/survivor, want 2/2", len(mine), len(theirs))
			}

			lost := time.Now()
			switch how {
			case "killed":
				if err := f.KillWorker("doomed"); err == nil {
					t.Log("aborted worker returned nil")
				}
			case "lease revoked":
				resp, err := f.Client.Get(ctx, f.Store.Keys().Worker("doomed"))
				if err != nil || len(resp.Kvs) == 0 {
					t.Fatalf("worker record: %v", err)
				}
				if _, err := f.Client.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
					t.Fatal(err)
				}
			}
			f.Eventually(15*time.Second, "doomed's sessions fail", func() bool {
				for _, s := range mine {
					if got := getSession(t, f, 0, s.ID); got.State != apiv1.StateFailed || got.EndReason != apiv1.ReasonWorkerLost {
						return false
					}
				}
				return true
			})
			t.Logf("sessions failed %s after the worker was %s", time.Since(lost).Round(time.Millisecond), how)
			perGPU, _, err := f.SlotKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(perGPU["doomed"]) != 0 {
				t.Errorf("doomed still holds slots %v", perGPU["doomed"])
			}
			for _, s := range theirs {
				if got := getSession(t, f, 0, s.ID); got.State != apiv1.StateReady {
					t.Errorf("survivor's session %s is %s", s.ID, got.State)
				}
			}
			f.Eventually(5*time.Second, "events report the loss", func() bool {
				failed := 0
				for _, s := range mine {
					if events.has(func(e *fleetv1.Event) bool {
						return e.GetType() == fleetbus.SessionFailed && e.GetSessionId() == s.ID &&
							e.GetSession().GetEndReason() == fleetv1.EndReason_END_REASON_WORKER_LOST
					}) {
						failed++
					}
				}
				return failed == len(mine) && events.has(func(e *fleetv1.Event) bool {
					return e.GetType() == fleetbus.WorkerLost && e.GetWorkerId() == "doomed"
				})
			})
			// The freed capacity is gone with the worker: the fleet is full.
			if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{}); r.Status != 503 {
				t.Errorf("create after loss: %d, want 503 (survivor is full)", r.Status)
			}
		})
	}
}

// TestWorkerDownWhileLeaseLives: a worker that answers no health checks
// (its NATS is not the fleet's) is marked down although its lease lives,
// and nothing is placed on it.
func TestWorkerDownWhileLeaseLives(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "healthy"}}})
	island, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer island.Close()
	f.StartWorkerOn(testfleet.WorkerSpec{ID: "mute"}, island.URL())
	f.Eventually(10*time.Second, "mute is down", func() bool {
		r := f.MustDo(0, "GET", "/v1/workers/mute", testfleet.AdminKey, nil)
		var w apiv1.Worker
		r.JSON(t, &w)
		return w.State == apiv1.WorkerDown
	})
	if r := f.MustDo(0, "GET", "/v1/workers/healthy", testfleet.AdminKey, nil); !containsState(t, r, apiv1.WorkerActive) {
		t.Errorf("healthy worker not active: %s", r.Body)
	}
	for range 2 {
		if s := createSession(t, f, 0, testfleet.SessionsKey); s.WorkerID != "healthy" {
			t.Errorf("session placed on %s, a down worker", s.WorkerID)
		}
	}
	if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{}); r.Status != 503 {
		t.Errorf("create with only a down worker free: %d, want 503", r.Status)
	}
}

func containsState(t *testing.T, r testfleet.Response, state string) bool {
	var w apiv1.Worker
	r.JSON(t, &w)
	return w.State == state
}

// TestDrain: nothing lands on a drained worker; undrain restores it; only
// admin keys may drain; a worker stopped by SIGTERM ends its sessions with
// reason drained.
func TestDrain(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "a"}, {ID: "b"}}})
	if r := f.MustDo(0, "POST", "/v1/workers/a/drain", testfleet.SessionsKey, nil); r.Status != 403 {
		t.Fatalf("drain with a sessions key: %d, want 403", r.Status)
	}
	r := f.MustDo(0, "POST", "/v1/workers/a/drain", testfleet.AdminKey, nil)
	if r.Status != 202 || !containsState(t, r, apiv1.WorkerDraining) {
		t.Fatalf("drain: %d %s", r.Status, r.Body)
	}
	for i := range 2 {
		if s := createSession(t, f, 0, testfleet.SessionsKey); s.WorkerID != "b" {
			t.Fatalf("session %d placed on drained worker %s", i, s.WorkerID)
		}
	}
	if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{}); r.Status != 503 {
		t.Fatalf("create with only the drained worker free: %d, want 503", r.Status)
	}
	if r := f.MustDo(0, "GET", "/v1/workers/a", testfleet.AdminKey, nil); !containsState(t, r, apiv1.WorkerDraining) {
		t.Errorf("drained worker reads %s", r.Body)
	}

	if r := f.MustDo(0, "POST", "/v1/workers/a/undrain", testfleet.AdminKey, nil); r.Status != 200 {
		t.Fatalf("undrain: %d %s", r.Status, r.Body)
	}
	f.Eventually(5*time.Second, "a is active again", func() bool {
		return containsState(t, f.MustDo(0, "GET", "/v1/workers/a", testfleet.AdminKey, nil), apiv1.WorkerActive)
	})
	onA := createSession(t, f, 0, testfleet.SessionsKey)
	if onA.WorkerID != "a" {
		t.Fatalf("after undrain, session placed on %s", onA.WorkerID)
	}

	// SIGTERM path: the worker drains itself; at its deadline the session
	// left ends with reason drained and its slot is freed.
	if err := f.StopWorker("a"); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	got := getSession(t, f, 0, onA.ID)
	if got.State != apiv1.StateEnded || got.EndReason != apiv1.ReasonDrained {
		t.Fatalf("session on a stopped worker: %s/%s, want ended/drained", got.State, got.EndReason)
	}
	if perGPU, _, err := f.SlotKeys(context.Background()); err != nil || len(perGPU["a"]) != 0 {
		t.Fatalf("stopped worker still holds slots %v (%v)", perGPU["a"], err)
	}
}

// TestIdempotencyKey: ten parallel creates with one key make one session;
// the key with other parameters is a conflict; another key is another session.
func TestIdempotencyKey(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Replicas: 2, Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 4}}})
	ids := make([]string, 10)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			r, err := f.Do(i%2, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{Avatar: "default"}, "Idempotency-Key", "order-42")
			if err != nil || r.Status != 201 {
				t.Errorf("create %d: %v %d %s", i, err, r.Status, r.Body)
				return
			}
			var s apiv1.Session
			r.JSON(t, &s)
			ids[i] = s.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one Idempotency-Key made sessions %v", ids)
		}
	}
	if _, n, _ := f.SlotKeys(context.Background()); n != 1 {
		t.Fatalf("%d slots reserved for one idempotent create", n)
	}
	if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, map[string]any{"idle_timeout_seconds": 60}, "Idempotency-Key", "order-42"); r.Status != 409 {
		t.Errorf("same key, other body: %d, want 409", r.Status)
	}
	other := f.MustDo(0, "POST", "/v1/sessions", testfleet.OtherKey, apiv1.CreateSessionRequest{Avatar: "default"}, "Idempotency-Key", "order-42")
	var s apiv1.Session
	other.JSON(t, &s)
	if other.Status != 201 || s.ID == ids[0] {
		t.Errorf("another API key's same Idempotency-Key: %d %s, want a new session", other.Status, s.ID)
	}
}

// TestAnyReplicaAnswers: a session created on one replica is read and
// deleted through another, and survives the first replica's death.
func TestAnyReplicaAnswers(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Replicas: 2, Workers: []testfleet.WorkerSpec{{ID: "w"}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	f.StopReplica(0)
	if got := getSession(t, f, 1, s.ID); got.State != apiv1.StateReady || got.WorkerID != "w" {
		t.Fatalf("replica 1 reads %+v", got)
	}
	if r := f.MustDo(1, "DELETE", "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete via replica 1: %d", r.Status)
	}
	if r := f.MustDo(1, "DELETE", "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("second delete: %d, want 204", r.Status)
	}
	got := getSession(t, f, 1, s.ID)
	if got.State != apiv1.StateEnded || got.EndReason != apiv1.ReasonDeleted || got.EndedAt == nil {
		t.Fatalf("deleted session reads %+v", got)
	}
	if got.ViewerToken != "" {
		t.Error("ended session still hands out a viewer token")
	}

	// The supervisor's duties moved with the leadership: a worker lost now
	// still has its sessions failed.
	s = createSessionWith(t, f, 1, testfleet.SessionsKey, apiv1.CreateSessionRequest{RestartPolicy: apiv1.RestartNever})
	if err := f.KillWorker("w"); err == nil {
		t.Log("aborted worker returned nil")
	}
	f.Eventually(15*time.Second, "the surviving replica fails the lost worker's session", func() bool {
		got := getSession(t, f, 1, s.ID)
		return got.State == apiv1.StateFailed && got.EndReason == apiv1.ReasonWorkerLost
	})
}

// TestHalfDonePlacementIsReclaimed: a replica that died between reserving a
// slot and starting the session left a "starting" record and its slot; the
// supervisor ends it with reason error and frees the slot.
func TestHalfDonePlacementIsReclaimed(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{
		Workers:    []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 1}},
		Supervisor: supervisor.Options{ReconcileInterval: 200 * time.Millisecond},
	})
	ctx := context.Background()
	view, ok := f.Replicas[0].Registry().Worker("w")
	if !ok {
		t.Fatal("worker not in the registry")
	}
	orphan := &fleetv1.Session{
		Id:        "sess_orphan",
		State:     fleetv1.SessionState_SESSION_STATE_STARTING,
		CreatedAt: timestamppb.New(time.Now().Add(-3 * time.Minute)),
	}
	if _, ok, err := f.Store.Reserve(ctx, fleetstore.Reservation{Worker: "w", WorkerLease: view.Lease, WorkerRevision: view.Revision}, orphan); err != nil || !ok {
		t.Fatalf("reserve orphan: %v %v", ok, err)
	}
	if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{}); r.Status != 503 {
		t.Fatalf("create while the orphan holds the only slot: %d", r.Status)
	}
	f.Eventually(10*time.Second, "the orphan is reclaimed", func() bool {
		got := getSession(t, f, 0, orphan.Id)
		return got.State == apiv1.StateFailed && got.EndReason == apiv1.ReasonError
	})
	// The replica places from its watched cache: wait until it has seen the
	// slot go before asking for it.
	f.Eventually(5*time.Second, "the replica sees the slot freed", func() bool {
		v, ok := f.Replicas[0].Registry().Worker("w")
		return ok && v.Sessions == 0
	})
	if s := createSession(t, f, 0, testfleet.SessionsKey); s.WorkerID != "w" {
		t.Fatalf("freed slot not reused: %+v", s)
	}
}
