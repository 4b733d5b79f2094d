package replica_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// createOutcome is one create of a steady load.
type createOutcome struct {
	start, end time.Time
	status     int
	code       string // the error's code, for answers other than 201
	id         string
}

// LeaderLoss is what one etcd leader loss under a create load did.
type LeaderLoss struct {
	// FirstSuccess is the stop → first create that succeeded after it
	// (completed after the stop).
	FirstSuccess time.Duration
	// Gap is the longest time without a successful create around the stop.
	Gap time.Duration
	// Statuses counts the answers after the stop: "201", or the status
	// and the error's code ("503 no_capacity").
	Statuses map[string]int
}

// etcdLeaderLoss runs a steady create (then delete) load through replica 0
// of f, stops the etcd leader after warm, keeps the load on for after,
// and checks that no GPU ever held more sessions than slots (sampled every
// 50 ms) and that every created session has its record. The sessions in
// keep stay live throughout and must still be ready at the end.
func etcdLeaderLoss(t testing.TB, f *testfleet.Fleet, slots int, keep []string, warm, after time.Duration) LeaderLoss {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu       sync.Mutex
		outcomes []createOutcome
		wg       sync.WaitGroup
		over     []string
	)
	// Over-commit sampler.
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			perGPU, _, err := f.SlotKeys(sctx)
			scancel()
			if err != nil {
				continue // no leader right now: nothing to sample
			}
			for w, gs := range perGPU {
				for g, n := range gs {
					if n > slots {
						mu.Lock()
						over = append(over, fmt.Sprintf("%s/%d holds %d", w, g, n))
						mu.Unlock()
					}
				}
			}
		}
	})
	// Two clients, each creating and deleting in a loop.
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				o := createOutcome{start: time.Now()}
				r, err := f.Do(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
				o.end = time.Now()
				if err == nil {
					o.status = r.Status
					if r.Status == 201 {
						var s apiv1.Session
						r.JSON(t, &s)
						o.id = s.ID
					} else {
						var e apiv1.ErrorBody
						_ = json.Unmarshal(r.Body, &e)
						o.code = e.Error.Code
					}
				}
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				if o.id != "" {
					if r, err := f.Do(0, "DELETE", "/v1/sessions/"+o.id, testfleet.SessionsKey, nil); err != nil || r.Status != 204 {
						t.Errorf("delete %s: %v %d", o.id, err, r.Status)
					}
				}
				if o.status != 201 {
					time.Sleep(20 * time.Millisecond) // do not spin on errors
				}
			}
		})
	}
	time.Sleep(warm)
	leader := f.Etcd.Leader()
	if leader < 0 {
		t.Fatal("no etcd leader to stop")
	}
	stopped := time.Now()
	f.Etcd.KillMember(leader)
	time.Sleep(after)
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(over) > 0 {
		t.Errorf("over-commit seen: %v", over)
	}
	sort.Slice(outcomes, func(i, j int) bool { return outcomes[i].end.Before(outcomes[j].end) })
	res := LeaderLoss{Statuses: map[string]int{}, FirstSuccess: -1}
	var lastOK time.Time
	for _, o := range outcomes {
		if o.end.After(stopped) {
			res.Statuses[strings.TrimSpace(fmt.Sprintf("%d %s", o.status, o.code))]++
		}
		if o.status != 201 {
			continue
		}
		if !lastOK.IsZero() && o.end.After(stopped) && res.FirstSuccess < 0 {
			res.FirstSuccess = o.end.Sub(stopped)
			res.Gap = o.end.Sub(lastOK)
		}
		lastOK = o.end
	}
	if res.FirstSuccess < 0 {
		t.Fatalf("no create succeeded in the %s after the etcd leader stopped (%v)", after, res.Statuses)
	}
	// Nothing lost: every created session has its record, and the kept
	// ones are still ready where they were. (The store retries until its
	// context ends: bounded, a cluster that never recovers fails here.)
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	for _, o := range outcomes {
		if o.id == "" {
			continue
		}
		if _, _, err := f.Store.Session(rctx, o.id); err != nil {
			t.Errorf("created session %s: %v", o.id, err)
		}
	}
	for _, id := range keep {
		s, _, err := f.Store.Session(rctx, id)
		if err != nil || s.GetState().String() != "SESSION_STATE_READY" {
			t.Errorf("kept session %s after the leader loss: %v %v", id, s.GetState(), err)
		}
	}
	return res
}

// TestEtcdLeaderLossDuringCreates: the etcd leader of a 3-member cluster is
// stopped during a steady create load. Creates resume as soon as a new
// leader exists (fleetstore retries each request on another member), no
// GPU is ever over-committed, and no session is lost.
func TestEtcdLeaderLossDuringCreates(t *testing.T) {
	const slots = 4
	f := testfleet.Start(t, testfleet.Options{
		EtcdMembers: 3,
		Workers:     []testfleet.WorkerSpec{{ID: "a", SlotsPerGPU: slots}, {ID: "b", SlotsPerGPU: slots}},
		// A lease longer than an election: the loss is etcd's, not theirs.
		WorkerLeaseTTL: 5 * time.Second,
		Supervisor:     supervisor.Options{ElectionTTL: 5 * time.Second},
	})
	var keep []string
	for range 2 {
		keep = append(keep, createSession(t, f, 0, testfleet.SessionsKey).ID)
	}
	res := etcdLeaderLoss(t, f, slots, keep, 2*time.Second, 8*time.Second)
	t.Logf("etcd leader stopped → first successful create: %s; longest gap between successful creates: %s; answers after the stop: %v",
		res.FirstSuccess.Round(time.Millisecond), res.Gap.Round(time.Millisecond), res.Statuses)
	// Generous: the goal is 2 s, the issue measured 7.3 s before the fix.
	if res.FirstSuccess > 5*time.Second {
		t.Errorf("creates resumed %s after the leader stopped; want about 2 s", res.FirstSuccess)
	}
	// At most 4 of the 8 slots are ever taken (2 kept, one per client):
	// no_capacity means the replica's view of the fleet counted slots its
	// own deletes had freed (its watch is silent for seconds after the
	// leader's loss: the registry notes its own releases, as it notes its
	// reservations), or its watches were refused after the election
	// (etcd's simple tokens are unknown to a lagging member: the embedded
	// etcd signs its tokens).
	if n := res.Statuses["503 "+apiv1.CodeNoCapacity]; n > 0 {
		t.Errorf("%d creates answered no_capacity with half the fleet's slots free", n)
	}
}
