package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// leaderLossRuns is how many leader losses one benchmark run measures
// (each on a fresh 3-member cluster).
const leaderLossRuns = 3

// BenchmarkEtcdLeaderLoss measures etcd leader loss → first successful
// create: a 3-member etcd (fsync on), one replica, two workers, two
// clients creating and deleting sessions in a loop; the leader is killed
// (no leadership hand-over) and the time from the kill to the first create
// that succeeds after it is recorded, and also the part of it after etcd
// had a new leader (etcd's own election, 1-2 s with its default timeouts,
// is the rest). Reports the worst and the median of leaderLossRuns losses,
// in ms.
func BenchmarkEtcdLeaderLoss(b *testing.B) {
	var all, afterLeader []time.Duration
	for range b.N {
		for range leaderLossRuns {
			first, elected := leaderLossOnce(b)
			all = append(all, first)
			afterLeader = append(afterLeader, max(0, first-elected))
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	sort.Slice(afterLeader, func(i, j int) bool { return afterLeader[i] < afterLeader[j] })
	b.ReportMetric(float64(all[len(all)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(all[len(all)-1].Milliseconds()), "max-ms")
	b.ReportMetric(float64(afterLeader[len(afterLeader)-1].Milliseconds()), "after-leader-max-ms")
	b.Logf("etcd leader loss → first successful create, %d losses: %v", len(all), all)
	b.Logf("new leader elected → first successful create: %v", afterLeader)
}

// leaderLossOnce returns the time from the kill to the first successful
// create, and to the moment a live member first named a new leader.
func leaderLossOnce(b *testing.B) (first, elected time.Duration) {
	f := testfleet.Start(b, testfleet.Options{EtcdMembers: 3, Fsync: true, EtcdSnapshotCount: 1 << 30,
		Workers:        []testfleet.WorkerSpec{{ID: "a", SlotsPerGPU: 4}, {ID: "b", SlotsPerGPU: 4}},
		WorkerLeaseTTL: 5 * time.Second})
	defer f.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, elected = -1, -1
	var (
		mu      sync.Mutex
		stopped time.Time
		wg      sync.WaitGroup
		// failed counts the answers between the kill and the first
		// success, by status and error code, to say where the time goes.
		failed = map[string]int{}
	)
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				r, err := f.Do(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
				end := time.Now()
				if err != nil || r.Status != 201 {
					mu.Lock()
					if !stopped.IsZero() && first < 0 {
						failed[failure(r, err)]++
					}
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				}
				var s apiv1.Session
				r.JSON(b, &s)
				mu.Lock()
				if !stopped.IsZero() && first < 0 {
					first = end.Sub(stopped)
				}
				mu.Unlock()
				_, _ = f.Do(0, "DELETE", "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil)
			}
		})
	}
	time.Sleep(2 * time.Second)
	leader := f.Etcd.Leader()
	if leader < 0 {
		b.Fatal("no etcd leader")
	}
	mu.Lock()
	stopped = time.Now()
	mu.Unlock()
	f.Etcd.KillMember(leader)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if elected < 0 && f.Etcd.Leader() >= 0 { // the killed member is skipped
			elected = time.Since(stopped)
		}
		mu.Lock()
		done := first >= 0
		mu.Unlock()
		if done && elected >= 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if first < 0 || elected < 0 {
		b.Fatalf("within 15 s of the leader's loss: first create %v, new leader %v (failures: %v)", first, elected, failed)
	}
	b.Logf("leader loss → new leader %v, first create %v; answers before it: %v",
		elected.Round(time.Millisecond), first.Round(time.Millisecond), failed)
	return first, elected
}

// failure names a create that did not succeed: its status and error code.
func failure(r testfleet.Response, err error) string {
	if err != nil {
		return "transport error"
	}
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &body)
	return fmt.Sprintf("%d %s", r.Status, body.Error.Code)
}
