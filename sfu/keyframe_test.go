package sfu

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeyframeLimiterHeldRequestRace: a request that arrives after the held
// request's timer fired but before its callback got the lock is covered by
// that held request, not forwarded as well (it once made two keyframe
// requests within microseconds).
func TestKeyframeLimiterHeldRequestRace(t *testing.T) {
	const interval = 20 * time.Millisecond
	for range 20 {
		var fired atomic.Int64
		var mu sync.Mutex
		var at []time.Time
		k := newKeyframeLimiter(interval, func() {
			fired.Add(1)
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
		})
		k.request() // forwarded at once
		k.request() // held
		k.mu.Lock()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.request() // waits for the lock
		}()
		// The timer fires; trailing waits for the lock behind the request
		// (a mutex starved for 1 ms is handed over in arrival order).
		time.Sleep(2 * interval)
		k.mu.Unlock()
		wg.Wait()
		time.Sleep(2 * interval) // anything held goes out
		k.close()
		mu.Lock()
		for i := 1; i < len(at); i++ {
			if d := at[i].Sub(at[i-1]); d < interval-time.Millisecond {
				t.Fatalf("keyframe requests %d and %d forwarded %v apart, want ≥ %v", i-1, i, d, interval)
			}
		}
		mu.Unlock()
		req, fwd := k.counts()
		if req != 3 || fwd != uint64(fired.Load()) {
			t.Fatalf("counts %d requested, %d forwarded; fired %d", req, fwd, fired.Load())
		}
	}
}
