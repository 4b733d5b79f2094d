package sfu

import (
	"sync"
	"testing"
	"time"
)

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
