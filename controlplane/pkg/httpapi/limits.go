package httpapi

import (
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
)

// keyLimiter holds this replica's per-key request buckets and open event
// stream counts. Both are per replica: with N replicas behind a balancer a
// key may make up to N times its rate and hold N times its streams. The
// live-session quota, by contrast, is enforced in etcd (fleet-wide).
// Entries are keyed by the key's owner fingerprint, so there are at most as
// many as there are keys.
type keyLimiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	streams map[string]int
}

type bucket struct {
	lim   *rate.Limiter
	rate  float64
	burst int
}

func newKeyLimiter() *keyLimiter {
	return &keyLimiter{buckets: map[string]*bucket{}, streams: map[string]int{}}
}

// allow takes one request from the principal's bucket; when it is empty
// it returns a 429 rate_limited with the wait until a token is back.
func (k *keyLimiter) allow(p auth.Principal, now time.Time) error {
	l := p.Limits
	if l.Rate <= 0 {
		return nil
	}
	burst := l.Burst
	if burst <= 0 {
		burst = max(1, int(math.Ceil(l.Rate)))
	}
	k.mu.Lock()
	b, ok := k.buckets[p.Owner]
	if !ok || b.rate != l.Rate || b.burst != burst {
		// New key, or its limits changed (a reload): a fresh bucket.
		b = &bucket{lim: rate.NewLimiter(rate.Limit(l.Rate), burst), rate: l.Rate, burst: burst}
		k.buckets[p.Owner] = b
	}
	res := b.lim.ReserveN(now, 1)
	k.mu.Unlock()
	if !res.OK() {
		return rateLimited(time.Second)
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now) // the request is refused: give its token back
		return rateLimited(d)
	}
	return nil
}

func rateLimited(wait time.Duration) error {
	return &apiError{status: http.StatusTooManyRequests, code: apiv1.CodeRateLimited,
		message: "request rate of this API key exceeded; retry after the Retry-After seconds", retryAfter: max(wait, time.Second)}
}

// openStream counts one more event stream of the principal, or refuses it
// with 429 quota_exceeded at the key's limit; release undoes it.
func (k *keyLimiter) openStream(p auth.Principal) (release func(), err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if max := p.Limits.MaxEventStreams; max > 0 && k.streams[p.Owner] >= max {
		return nil, errorf(http.StatusTooManyRequests, apiv1.CodeQuotaExceeded,
			"this API key holds its limit of %d open event streams", max)
	}
	k.streams[p.Owner]++
	var once sync.Once
	return func() {
		once.Do(func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			if k.streams[p.Owner]--; k.streams[p.Owner] <= 0 {
				delete(k.streams, p.Owner)
			}
		})
	}, nil
}
