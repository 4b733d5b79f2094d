package bench

import (
	"context"
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
// that succeeds after it is recorded. Reports the worst and the median of
// leaderLossRuns losses, in ms.
func BenchmarkEtcdLeaderLoss(b *testing.B) {
	var all []time.Duration
	for range b.N {
		for range leaderLossRuns {
			all = append(all, leaderLossOnce(b))
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(all[len(all)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(all[len(all)-1].Milliseconds()), "max-ms")
	b.Logf("etcd leader loss → first successful create, %d losses: %v", len(all), all)
}

func leaderLossOnce(b *testing.B) time.Duration {
	f := testfleet.Start(b, testfleet.Options{EtcdMembers: 3, Fsync: true, EtcdSnapshotCount: 1 << 30,
		Workers:        []testfleet.WorkerSpec{{ID: "a", SlotsPerGPU: 4}, {ID: "b", SlotsPerGPU: 4}},
		WorkerLeaseTTL: 5 * time.Second})
	defer f.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu      sync.Mutex
		stopped time.Time
		first   time.Duration = -1
		wg      sync.WaitGroup
	)
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				r, err := f.Do(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
				end := time.Now()
				if err != nil || r.Status != 201 {
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
		mu.Lock()
		done := first >= 0
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if first < 0 {
		b.Fatal("no create succeeded within 15 s of the leader's loss")
	}
	return first
}
