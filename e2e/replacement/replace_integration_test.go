package replacement_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// These tests run a whole fleet in-process (real etcd, NATS, replicas and
// workers over loopback). A killed worker is noticed when its lease expires
// (testfleet's worker lease TTL, 2 s by default).

func create(t *testing.T, f *testfleet.Fleet, req apiv1.CreateSessionRequest) apiv1.Session {
	t.Helper()
	r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, req)
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var s apiv1.Session
	r.JSON(t, &s)
	return s
}

func get(t *testing.T, f *testfleet.Fleet, id string) apiv1.Session {
	t.Helper()
	r := f.MustDo(0, "GET", "/v1/sessions/"+id, testfleet.AdminKey, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("get %s: %d %s", id, r.Status, r.Body)
	}
	var s apiv1.Session
	r.JSON(t, &s)
	return s
}

// watchStates records every state a session record goes through in etcd.
func watchStates(t *testing.T, f *testfleet.Fleet, id string) func() []fleetv1.SessionState {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	key := f.Store.Keys().Session(id)
	resp, err := f.Client.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	wch := f.Client.Watch(ctx, key, clientv3.WithRev(resp.Header.Revision+1))
	var (
		mu     sync.Mutex
		states []fleetv1.SessionState
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		for wr := range wch {
			for _, ev := range wr.Events {
				if sess, err := fleetstore.DecodeSession(ev.Kv.Value); err == nil {
					mu.Lock()
					states = append(states, sess.GetState())
					mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []fleetv1.SessionState {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(states)
	}
}

func other(id string) string {
	if id == "w1" {
		return "w2"
	}
	return "w1"
}

// TestLostSessionIsReplaced: a session whose worker is killed keeps its id
// and becomes ready on the other worker (placing → starting → ready), with
// one move from the lost worker; its identity and lifetimes stay.
func TestLostSessionIsReplaced(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w1"}, {ID: "w2"}}})
	s := create(t, f, apiv1.CreateSessionRequest{Labels: map[string]string{"team": "a"}, MaxDurationSeconds: ptr(600)})
	if s.RestartPolicy != apiv1.RestartOnWorkerLost || s.ReplaceTimeoutSeconds != 60 || s.Moves != 0 || s.PlacedAt == nil {
		t.Fatalf("created session: %+v", s)
	}
	states := watchStates(t, f, s.ID)
	victim, target := s.WorkerID, other(s.WorkerID)
	killed := time.Now()
	if err := f.KillWorker(victim); err == nil {
		t.Log("aborted worker returned nil")
	}
	var got apiv1.Session
	f.Eventually(30*time.Second, "the session is ready on "+target, func() bool {
		got = get(t, f, s.ID)
		return got.State == apiv1.StateReady && got.WorkerID == target
	})
	t.Logf("kill → ready on %s: %s (lease TTL 2 s)", target, time.Since(killed).Round(time.Millisecond))
	if got.Moves != 1 || got.MovedFrom != victim || got.MoveReason != apiv1.MoveWorkerLost || got.LostAt != nil {
		t.Errorf("moved session: moves=%d from=%q reason=%q lost_at=%v", got.Moves, got.MovedFrom, got.MoveReason, got.LostAt)
	}
	if !got.CreatedAt.Equal(s.CreatedAt) || got.Labels["team"] != "a" || got.MaxDurationSeconds != 600 ||
		got.Avatar != s.Avatar || got.Voice != s.Voice || got.PlacedAt == nil || !got.PlacedAt.After(*s.PlacedAt) {
		t.Errorf("identity or lifetimes changed: before %+v, after %+v", s, got)
	}
	f.Eventually(5*time.Second, "the record went placing → starting → ready", func() bool {
		return isSubsequence([]fleetv1.SessionState{fleetv1.SessionState_SESSION_STATE_PLACING,
			fleetv1.SessionState_SESSION_STATE_STARTING, fleetv1.SessionState_SESSION_STATE_READY}, states())
	})
	perGPU, total, err := f.SlotKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if total != 1 || perGPU[target][0] != 1 {
		t.Errorf("slots after the move: %v, want one on %s", perGPU, target)
	}
	// The session works on its new worker: it takes speech and can be ended.
	if r := f.MustDo(0, "POST", "/v1/sessions/"+s.ID+"/speak", testfleet.SessionsKey, apiv1.SpeakRequest{Text: "hello again"}); r.Status/100 != 2 {
		t.Errorf("speak after the move: %d %s", r.Status, r.Body)
	}
	if r := f.MustDo(0, "DELETE", "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil); r.Status != http.StatusNoContent {
		t.Errorf("delete after the move: %d %s", r.Status, r.Body)
	}
}

func ptr(v int) *int { return &v }

func isSubsequence(want, got []fleetv1.SessionState) bool {
	i := 0
	for _, s := range got {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestLostSessionRestartNever: restart_policy never fails the session with
// worker_lost, as before re-placement existed.
func TestLostSessionRestartNever(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w1"}, {ID: "w2"}}})
	s := create(t, f, apiv1.CreateSessionRequest{RestartPolicy: apiv1.RestartNever})
	if s.RestartPolicy != apiv1.RestartNever {
		t.Fatalf("restart policy %q", s.RestartPolicy)
	}
	if err := f.KillWorker(s.WorkerID); err == nil {
		t.Log("aborted worker returned nil")
	}
	f.Eventually(30*time.Second, "the session fails with worker_lost", func() bool {
		got := get(t, f, s.ID)
		return got.State == apiv1.StateFailed && got.EndReason == apiv1.ReasonWorkerLost && got.Moves == 0 && got.WorkerID == s.WorkerID
	})
}

// TestLostSessionWaitsForCapacity: with every other slot taken the lost
// session stays placing, and is placed as soon as a slot frees; with a
// short replace_timeout it fails with worker_lost instead.
func TestLostSessionWaitsForCapacity(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout *int
		free    bool
		join    bool // a new worker joins instead
	}{
		{name: "slot frees", free: true},
		{name: "worker joins", join: true},
		{name: "replace timeout", timeout: ptr(3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := testfleet.Start(t, testfleet.Options{
				Workers:    []testfleet.WorkerSpec{{ID: "w1", SlotsPerGPU: 1}, {ID: "w2", SlotsPerGPU: 1}},
				Supervisor: supervisor.Options{ReconcileInterval: time.Second},
			})
			a := create(t, f, apiv1.CreateSessionRequest{ReplaceTimeoutSeconds: tc.timeout})
			b := create(t, f, apiv1.CreateSessionRequest{})
			if a.WorkerID == b.WorkerID {
				t.Fatalf("both sessions on %s", a.WorkerID)
			}
			if err := f.KillWorker(a.WorkerID); err == nil {
				t.Log("aborted worker returned nil")
			}
			f.Eventually(30*time.Second, "the lost session is placing", func() bool {
				got := get(t, f, a.ID)
				return got.State == apiv1.StatePlacing && got.LostAt != nil && got.MovedFrom == a.WorkerID
			})
			lost := time.Now()
			if tc.join {
				time.Sleep(time.Second)
				joined := time.Now()
				f.StartWorker(testfleet.WorkerSpec{ID: "w3", SlotsPerGPU: 1})
				f.Eventually(30*time.Second, "the session is ready on the new worker", func() bool {
					got := get(t, f, a.ID)
					return got.State == apiv1.StateReady && got.WorkerID == "w3" && got.Moves == 1
				})
				t.Logf("worker joined → ready: %s", time.Since(joined).Round(time.Millisecond))
				return
			}
			if !tc.free {
				var got apiv1.Session
				f.Eventually(30*time.Second, "the session fails with worker_lost", func() bool {
					got = get(t, f, a.ID)
					return got.State == apiv1.StateFailed
				})
				if got.EndReason != apiv1.ReasonWorkerLost {
					t.Fatalf("ended with %q: %s", got.EndReason, got.EndMessage)
				}
				t.Logf("failed %s after placing was seen (replace_timeout 3 s): %s", time.Since(lost).Round(time.Millisecond), got.EndMessage)
				if g := get(t, f, b.ID); g.State != apiv1.StateReady {
					t.Errorf("the other session is %s", g.State)
				}
				return
			}
			time.Sleep(time.Second) // no slot: it must stay placing
			if got := get(t, f, a.ID); got.State != apiv1.StatePlacing {
				t.Fatalf("without capacity the session is %s, want placing", got.State)
			}
			if r := f.MustDo(0, "DELETE", "/v1/sessions/"+b.ID, testfleet.SessionsKey, nil); r.Status != http.StatusNoContent {
				t.Fatalf("delete: %d", r.Status)
			}
			freed := time.Now()
			f.Eventually(30*time.Second, "the session is ready on the freed slot", func() bool {
				got := get(t, f, a.ID)
				return got.State == apiv1.StateReady && got.WorkerID == b.WorkerID && got.Moves == 1
			})
			t.Logf("slot freed → ready: %s", time.Since(freed).Round(time.Millisecond))
		})
	}
}

// TestCreateRightAfterKillNever500: the bug. Creates sent while a
// killed worker's lease still lives may try it first; each must end placed
// elsewhere (201) or 503 no_capacity, never 500, whatever the reaper sees
// of the first attempt's slot.
func TestCreateRightAfterKillNever500(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "live", SlotsPerGPU: 8}}})
	ctx := context.Background()
	statuses := map[int]int{}
	var created []string
	for round := range 3 {
		doomed := fmt.Sprintf("doomed%d", round)
		f.StartWorker(testfleet.WorkerSpec{ID: doomed, SlotsPerGPU: 8})
		if err := f.KillWorker(doomed); err == nil {
			t.Log("aborted worker returned nil")
		}
		// Until well after the lease expired: the registry offers the dead
		// worker first, then its slots vanish while creates are in flight.
		deadline := time.Now().Add(3 * time.Second)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					r, err := f.Do(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
					if err != nil {
						t.Error(err)
						return
					}
					var s apiv1.Session
					if r.Status == http.StatusCreated {
						r.JSON(t, &s)
						_ = f.MustDo(0, "DELETE", "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil)
					}
					mu.Lock()
					statuses[r.Status]++
					if r.Status == http.StatusCreated {
						created = append(created, s.ID)
					}
					mu.Unlock()
					if r.Status != http.StatusCreated && r.Status != http.StatusServiceUnavailable {
						t.Errorf("create after a kill: %d %s", r.Status, r.Body)
					}
				}
			})
		}
		wg.Wait()
	}
	t.Logf("create statuses after kills: %v", statuses)
	if statuses[http.StatusCreated] == 0 {
		t.Fatal("no create succeeded")
	}
	// Every created session was deleted, not failed by a stale slot sighting.
	for _, id := range created {
		sess, _, err := f.Store.Session(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if sess.GetEndReason() != fleetv1.EndReason_END_REASON_DELETED {
			t.Errorf("session %s ended with %s: %s", id, sess.GetEndReason(), sess.GetEndMessage())
		}
	}
}

// TestManyLostSessionsNeverOvercommit: four sessions of a killed worker
// compete for three free slots; three move, one fails after its replace
// timeout, and no worker ever holds more slot keys than it has slots.
func TestManyLostSessionsNeverOvercommit(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "big", SlotsPerGPU: 4}}})
	var lost []apiv1.Session
	for range 4 {
		lost = append(lost, create(t, f, apiv1.CreateSessionRequest{ReplaceTimeoutSeconds: ptr(4)}))
	}
	f.StartWorker(testfleet.WorkerSpec{ID: "w2", SlotsPerGPU: 2})
	f.StartWorker(testfleet.WorkerSpec{ID: "w3", SlotsPerGPU: 1})
	if err := f.KillWorker("big"); err == nil {
		t.Log("aborted worker returned nil")
	}
	ctx := context.Background()
	limit := map[string]int{"w2": 2, "w3": 1}
	var ready, failed int
	f.Eventually(40*time.Second, "every lost session is ready or failed", func() bool {
		perGPU, _, err := f.SlotKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for w, n := range limit {
			if perGPU[w][0] > n {
				t.Fatalf("worker %s holds %d slot keys, has %d slots", w, perGPU[w][0], n)
			}
		}
		ready, failed = 0, 0
		for _, s := range lost {
			switch got := get(t, f, s.ID); got.State {
			case apiv1.StateReady:
				if got.WorkerID == "big" {
					continue // the lease has not expired yet
				}
				if got.Moves != 1 || got.MovedFrom != "big" {
					t.Fatalf("moved session %+v", got)
				}
				ready++
			case apiv1.StateFailed:
				if got.EndReason != apiv1.ReasonWorkerLost {
					t.Fatalf("failed with %s: %s", got.EndReason, got.EndMessage)
				}
				failed++
			}
		}
		return ready+failed == len(lost)
	})
	if ready != 3 || failed != 1 {
		t.Errorf("%d ready, %d failed; want 3 and 1", ready, failed)
	}
}

// TestNextLeaderFinishesReplacement: the leader dies while a lost session
// waits for capacity; the next leader picks the placing record up and
// places it when a slot frees.
func TestNextLeaderFinishesReplacement(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{
		Replicas: 2,
		Workers:  []testfleet.WorkerSpec{{ID: "w1", SlotsPerGPU: 1}, {ID: "w2", SlotsPerGPU: 1}},
	})
	ctx := context.Background()
	a := create(t, f, apiv1.CreateSessionRequest{ReplaceTimeoutSeconds: ptr(120)})
	b := create(t, f, apiv1.CreateSessionRequest{})
	if err := f.KillWorker(a.WorkerID); err == nil {
		t.Log("aborted worker returned nil")
	}
	f.Eventually(30*time.Second, "the lost session is placing", func() bool { return get(t, f, a.ID).State == apiv1.StatePlacing })
	leader, survivor := -1, -1
	for i := range 2 {
		ok, err := supervisor.IsLeader(ctx, f.Store, fmt.Sprintf("cp%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			leader, survivor = i, 1-i
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	f.StopReplica(leader)
	if r := f.MustDo(survivor, "DELETE", "/v1/sessions/"+b.ID, testfleet.SessionsKey, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete through the survivor: %d", r.Status)
	}
	stopped := time.Now()
	f.Eventually(40*time.Second, "the next leader places the session", func() bool {
		r := f.MustDo(survivor, "GET", "/v1/sessions/"+a.ID, testfleet.AdminKey, nil)
		var got apiv1.Session
		r.JSON(t, &got)
		return got.State == apiv1.StateReady && got.WorkerID == b.WorkerID && got.Moves == 1
	})
	t.Logf("leader stopped → placed by the next: %s", time.Since(stopped).Round(time.Millisecond))
}
