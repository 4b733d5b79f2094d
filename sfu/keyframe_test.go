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

// TestKeyframeLimiterSpacing: however requests arrive, two forwarded
// keyframe requests are never closer than the interval, the first goes at
// once, and a request inside the interval is not lost.
func TestKeyframeLimiterSpacing(t *testing.T) {
	const interval = 20 * time.Millisecond
	var mu sync.Mutex
	var fired []time.Time
	k := newKeyframeLimiter(interval, func() {
		mu.Lock()
		fired = append(fired, time.Now())
		mu.Unlock()
	})
	start := time.Now()
	k.request()
	mu.Lock()
	if len(fired) != 1 || fired[0].Sub(start) > 5*time.Millisecond {
		t.Fatalf("first request not forwarded at once: %v", fired)
	}
	mu.Unlock()

	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 400*time.Millisecond {
				k.request()
				time.Sleep(time.Duration(g+1) * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	last := time.Now()
	time.Sleep(2 * interval) // the held request goes out
	k.close()

	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(fired); i++ {
		// The timer never fires early; allow only clock granularity.
		if gap := fired[i].Sub(fired[i-1]); gap < interval-time.Millisecond {
			t.Errorf("requests %d and %d forwarded %v apart, interval %v", i-1, i, gap, interval)
		}
	}
	if end := fired[len(fired)-1]; end.Before(last.Add(-interval)) {
		t.Errorf("the last request (at %v) was lost: last forwarded at %v", last.Sub(start), end.Sub(start))
	}
	req, fwd := k.counts()
	if fwd != uint64(len(fired)) || req <= fwd {
		t.Errorf("counts: %d requested, %d forwarded, %d fired", req, fwd, len(fired))
	}
}
