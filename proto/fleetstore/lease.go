package fleetstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A worker's lease carries its record and every slot key reserved on it.
// LeaseSession keeps one alive in the shape of etcd's concurrency.Session
// (Lease, Done, Orphan, Close), with one addition that fencing needs: it
// ends itself a margin BEFORE etcd could expire the lease, counted from
// the last keep-alive answer. Once Done is closed the worker must assume
// its slots are someone else's, and it still does so while etcd would
// keep them for a moment longer, so no slot is ever served by two workers.

// ErrLeaseLost is the cause of a LeaseSession's end when etcd said the
// lease is gone (revoked or expired) or stopped answering keep-alives.
var ErrLeaseLost = errors.New("lease lost")

// ErrLeaseFenced is the cause when no keep-alive answer came for so long
// that etcd may be about to expire the lease, and a last renewal of its
// own failed too.
var ErrLeaseFenced = errors.New("lease fenced: no keep-alive answer in time")

// GrantLease grants a lease of ttl (whole seconds, at least one).
func (s *Store) GrantLease(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	secs := int64(ttl / time.Second)
	if secs < 1 {
		return clientv3.NoLease, fmt.Errorf("grant lease: TTL %s under 1s", ttl)
	}
	var id clientv3.LeaseID
	_, err := s.retry(ctx, func(actx context.Context) error {
		resp, err := s.cli.Grant(actx, secs)
		if err == nil {
			id = resp.ID
		}
		return err
	})
	if err != nil {
		return clientv3.NoLease, fmt.Errorf("grant lease: %w", err)
	}
	return id, nil
}

// RevokeLease revokes a lease: every key under it vanishes at once. A lease
// that is already gone is not an error. The leader fences a lost worker so.
func (s *Store) RevokeLease(ctx context.Context, lease clientv3.LeaseID) error {
	_, err := s.retry(ctx, func(actx context.Context) error {
		_, err := s.cli.Revoke(actx, lease)
		return err
	})
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoke lease %x: %w", lease, err)
	}
	return nil
}

// LeaseTTL is the time a lease has left (negative when it is gone).
func (s *Store) LeaseTTL(ctx context.Context, lease clientv3.LeaseID) (time.Duration, error) {
	var ttl int64
	_, err := s.retry(ctx, func(actx context.Context) error {
		resp, err := s.cli.TimeToLive(actx, lease)
		if err == nil {
			ttl = resp.TTL
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("time to live of lease %x: %w", lease, err)
	}
	return time.Duration(ttl) * time.Second, nil
}

// LeaseSession keeps one lease alive until it is lost, fenced, orphaned or
// closed.
type LeaseSession struct {
	s      *Store
	id     clientv3.LeaseID
	ttl    time.Duration
	margin time.Duration
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	err     error
	renewed time.Time
}

// KeepLease keeps lease (granted with ttl just before) alive until life
// ends or the lease is lost. The session ends itself fenceMargin before
// the lease could expire (last answer + ttl − fenceMargin); 0 means a
// fifth of ttl, at least 200 ms.
func (s *Store) KeepLease(life context.Context, lease clientv3.LeaseID, ttl, fenceMargin time.Duration) (*LeaseSession, error) {
	if fenceMargin <= 0 {
		fenceMargin = max(ttl/5, 200*time.Millisecond)
	}
	if fenceMargin >= ttl {
		return nil, fmt.Errorf("keep lease %x: fence margin %s not under TTL %s", lease, fenceMargin, ttl)
	}
	// The grant's answer counts as the first renewal.
	start := time.Now()
	kctx, cancel := context.WithCancel(life)
	ch, err := s.cli.KeepAlive(kctx, lease)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("keep lease %x alive: %w", lease, err)
	}
	ls := &LeaseSession{s: s, id: lease, ttl: ttl, margin: fenceMargin, cancel: cancel, done: make(chan struct{}), renewed: start}
	go ls.run(kctx, ch)
	return ls, nil
}

func (l *LeaseSession) run(ctx context.Context, ch <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(l.done)
	defer l.cancel()
	fence := time.NewTimer(l.ttl - l.margin)
	defer fence.Stop()
	for {
		select {
		case <-ctx.Done():
			l.end(ctx.Err())
			return
		case <-fence.C:
			// Before giving up, ask once more, within three quarters of
			// the margin: a lease etcd still renews was never expired, so
			// its slots were never anyone else's (a stalled process or
			// keep-alive stream is not a lost lease). The last quarter, and
			// the time the leader takes to re-place a session elsewhere,
			// cover the round trip.
			ttl, err := l.confirm(ctx)
			if err != nil {
				l.end(err)
				return
			}
			l.renewedAt(time.Now())
			fence.Reset(ttl - l.margin)
		case resp, ok := <-ch:
			if !ok {
				l.end(ErrLeaseLost)
				return
			}
			// The renewal happened at the leader before the answer came
			// back: counting from now is late by a round trip, which the
			// margin covers.
			l.renewedAt(time.Now())
			fence.Reset(time.Duration(resp.TTL)*time.Second - l.margin)
		}
	}
}

// confirm renews the lease with one request of its own, bounded by three
// quarters of the fence margin; it returns the lease's TTL, or why the
// session ends.
func (l *LeaseSession) confirm(ctx context.Context) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, l.margin*3/4)
	defer cancel()
	var ttl int64
	_, err := l.s.retry(cctx, func(a context.Context) error {
		resp, err := l.s.cli.KeepAliveOnce(a, l.id)
		if err == nil {
			ttl = resp.TTL
		}
		return err
	})
	switch {
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && ttl <= 0):
		return 0, ErrLeaseLost
	case err != nil:
		return 0, fmt.Errorf("%w: %v", ErrLeaseFenced, err)
	}
	return time.Duration(ttl) * time.Second, nil
}

func (l *LeaseSession) renewedAt(t time.Time) {
	l.mu.Lock()
	l.renewed = t
	l.mu.Unlock()
}

func (l *LeaseSession) end(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

// Lease is the kept lease.
func (l *LeaseSession) Lease() clientv3.LeaseID { return l.id }

// Done is closed when the session ends: the lease was lost or fenced, or
// Orphan or Close ended it, or its life context ended.
func (l *LeaseSession) Done() <-chan struct{} { return l.done }

// Err says why the session ended (nil while it runs).
func (l *LeaseSession) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Renewed is when the last keep-alive answer (or the grant) arrived.
func (l *LeaseSession) Renewed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed
}

// Orphan stops keeping the lease alive without revoking it, as a crashed
// process would: it expires after its TTL.
func (l *LeaseSession) Orphan() {
	l.end(context.Canceled)
	l.cancel()
	<-l.done
}

// Close stops keeping the lease alive and revokes it.
func (l *LeaseSession) Close(ctx context.Context) error {
	l.Orphan()
	return l.s.RevokeLease(ctx, l.id)
}
