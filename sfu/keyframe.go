package sfu

import (
	"sync"
	"time"
)

// keyframeLimiter forwards keyframe requests at most once per interval. The
// first request passes at once; one arriving inside the interval is held and
// sent when the interval ends (one trailing request however many arrived), so
// a viewer that joins or loses a frame just after a keyframe still gets one
// soon, while a PLI flood costs at most one keyframe per interval.
type keyframeLimiter struct {
	interval time.Duration
	fire     func()

	mu        sync.Mutex
	last      time.Time
	timer     *time.Timer // the held request; nil when none
	closed    bool
	forwarded uint64
	requested uint64
	wg        sync.WaitGroup // a running trailing request
}

func newKeyframeLimiter(interval time.Duration, fire func()) *keyframeLimiter {
	return &keyframeLimiter{interval: interval, fire: fire}
}

// request asks for a keyframe. It never blocks beyond the fire callback.
func (k *keyframeLimiter) request() {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.requested++
	if k.timer != nil {
		// A held request goes out at the end of the interval. (Its
		// timer may have fired already, with trailing waiting for the
		// lock: firing here too would send two at once.)
		k.mu.Unlock()
		return
	}
	now := time.Now()
	if since := now.Sub(k.last); k.last.IsZero() || since >= k.interval {
		k.last = now
		k.forwarded++
		k.mu.Unlock()
		k.fire()
		return
	}
	k.wg.Add(1)
	k.timer = time.AfterFunc(k.interval-now.Sub(k.last), k.trailing)
	k.mu.Unlock()
}

func (k *keyframeLimiter) trailing() {
	defer k.wg.Done()
	k.mu.Lock()
	k.timer = nil
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.last = time.Now()
	k.forwarded++
	k.mu.Unlock()
	k.fire()
}

// counts returns how many requests arrived and how many were forwarded.
func (k *keyframeLimiter) counts() (requested, forwarded uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.requested, k.forwarded
}

// close drops a held request and waits for a running one.
func (k *keyframeLimiter) close() {
	k.mu.Lock()
	k.closed = true
	if k.timer != nil && k.timer.Stop() {
		k.timer = nil
		k.wg.Done()
	}
	k.mu.Unlock()
	k.wg.Wait()
}
