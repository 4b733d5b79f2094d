package fleetstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Requests to etcd survive the loss of its leader. Each attempt carries
// WithRequireLeader, so a member without a leader answers "no leader" at
// once instead of holding a proposal until its own request timeout (5 s +
// two election timeouts: the 7 s of unavailability seen when the leader
// stopped); each attempt is bounded by RetryOptions.AttemptTimeout; and an
// attempt that failed for a reason a new leader cures (no leader, leader
// changed, timeout, an unavailable member) is retried after a short
// jittered backoff, which the client's balancer sends to the next endpoint,
// until the caller's context ends.
//
// A transaction whose attempt timed out may still have committed. Callers
// of non-idempotent transactions ask CommitOutcome whether an attempt was
// retried and, when the retry's guard fails, read back whether their own
// write is there (Reserve, UpdateSession, EndSession, Unreserve do).

// RetryOptions tunes how requests ride out an etcd leader change.
type RetryOptions struct {
	// AttemptTimeout bounds one attempt of one request (default 500 ms).
	// A request a follower forwarded to a leader that just died is never
	// answered, and the follower keeps forwarding until its own election
	// timeout (1-2 s with etcd's defaults): each lost attempt costs this
	// much, and the attempt that can succeed starts only after the last
	// lost one, so this bound is about how far a request may lag behind
	// the new leader. (With 1 s, doubled after each timeout, reservations
	// took up to 3.2 s after a leader's loss whose election took 1.6 s.)
	// A healthy cluster answers in milliseconds; a request slower than
	// this is tried again (guarded transactions make that safe), and after
	// timeoutsBeforeEscalation timeouts in a row each attempt gets twice
	// as long, up to 8 × this, so a slow cluster is not retried forever.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered wait between attempts
	// (defaults 20 ms and 250 ms).
	MinBackoff, MaxBackoff time.Duration
}

// timeoutsBeforeEscalation is how many attempts in a row may time out
// before the next ones get longer: a dead leader costs a few lost
// attempts, a cluster too slow for the bound many.
const timeoutsBeforeEscalation = 3

func (o *RetryOptions) defaults() {
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 500 * time.Millisecond
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 20 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 250 * time.Millisecond
	}
}

// Retriable reports whether a failed request may succeed when tried again
// once the cluster has (again) a leader.
func Retriable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // the attempt's own timeout (the caller's is checked first)
	}
	switch rpctypes.Error(err) {
	case rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
		rpctypes.ErrTimeoutWaitAppliedIndex, rpctypes.ErrNotCapable, rpctypes.ErrStopped,
		rpctypes.ErrTooManyRequests,
		// A token one member issued may be unknown to the next one tried;
		// the client fetches a new one for the retry.
		rpctypes.ErrInvalidAuthToken, rpctypes.ErrAuthOldRevision:
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	case codes.Unknown:
		// A member whose raft stopped or that had no leader to forward a
		// proposal to says so only in words.
		msg := status.Convert(err).Message()
		return strings.Contains(msg, "raft: stopped") || strings.Contains(msg, "raft proposal dropped")
	}
	return false
}

// retry runs op until it succeeds, fails for a reason a retry cannot cure,
// or ctx ends. It returns how many attempts failed before the last one.
func (s *Store) retry(ctx context.Context, op func(ctx context.Context) error) (int, error) {
	return s.retryWithin(ctx, s.retryOpts.AttemptTimeout, op)
}

// retryWithin is retry with attempts bounded by timeout (nextTimeout: a
// request lost with a dead leader is retried quickly, while one a slow
// cluster cannot answer in time gets longer attempts, not endless ones).
func (s *Store) retryWithin(ctx context.Context, timeout time.Duration, op func(ctx context.Context) error) (int, error) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = s.retryOpts.MinBackoff, s.retryOpts.MaxBackoff
	bo.RandomizationFactor = 0.5
	timeouts := 0
	for failed := 0; ; failed++ {
		actx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), timeout)
		err := op(actx)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded)
		cancel()
		if err == nil || ctx.Err() != nil || !Retriable(err) {
			return failed, err
		}
		if timedOut {
			timeouts++
		} else {
			timeouts = 0
		}
		timeout = nextTimeout(timeout, s.retryOpts.AttemptTimeout, timeouts)
		wait := bo.NextBackOff()
		// A little extra spread so replicas retrying together do not land
		// on the new leader in one burst.
		wait += time.Duration(rand.Int64N(int64(s.retryOpts.MinBackoff)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return failed, err
		case <-t.C:
		}
	}
}

// nextTimeout is the bound of the attempt after one that ended with
// timeouts attempts in a row timed out: the same until
// timeoutsBeforeEscalation of them, then twice as long each time, at most
// 8 × base.
func nextTimeout(cur, base time.Duration, timeouts int) time.Duration {
	if timeouts < timeoutsBeforeEscalation {
		return cur
	}
	return min(2*cur, 8*base)
}

// retryKV is the store's KV: every call goes through retry.
type retryKV struct{ s *Store }

func (k retryKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	timeout := k.s.retryOpts.AttemptTimeout
	if len(clientv3.OpGet(key, opts...).RangeBytes()) > 0 {
		// A listing may be large: its first attempt gets longer.
		timeout *= 4
	}
	var resp *clientv3.GetResponse
	_, err := k.s.retryWithin(ctx, timeout, func(actx context.Context) error {
		var err error
		resp, err = k.s.cli.Get(actx, key, opts...)
		return err
	})
	return resp, err
}

// Put is idempotent: the same value written twice is the same state.
func (k retryKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	var resp *clientv3.PutResponse
	_, err := k.s.retry(ctx, func(actx context.Context) error {
		var err error
		resp, err = k.s.cli.Put(actx, key, val, opts...)
		return err
	})
	return resp, err
}

// Delete is idempotent: a key deleted twice is gone.
func (k retryKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	var resp *clientv3.DeleteResponse
	_, err := k.s.retry(ctx, func(actx context.Context) error {
		var err error
		resp, err = k.s.cli.Delete(actx, key, opts...)
		return err
	})
	return resp, err
}

// Txn starts a retried transaction.
func (k retryKV) Txn(ctx context.Context) *retryTxn { return &retryTxn{s: k.s, ctx: ctx} }

// retryTxn is a transaction committed with retries.
type retryTxn struct {
	s           *Store
	ctx         context.Context
	cmps        []clientv3.Cmp
	thens, elss []clientv3.Op
}

func (t *retryTxn) If(cs ...clientv3.Cmp) *retryTxn   { t.cmps = append(t.cmps, cs...); return t }
func (t *retryTxn) Then(ops ...clientv3.Op) *retryTxn { t.thens = append(t.thens, ops...); return t }
func (t *retryTxn) Else(ops ...clientv3.Op) *retryTxn { t.elss = append(t.elss, ops...); return t }

// Commit commits the transaction, retrying as retry does.
func (t *retryTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, _, err := t.CommitOutcome()
	return resp, err
}

// CommitOutcome commits like Commit; uncertain is true when an earlier
// attempt failed in a way that may have committed it (so a guard that fails
// now may fail because of this very transaction).
func (t *retryTxn) CommitOutcome() (resp *clientv3.TxnResponse, uncertain bool, err error) {
	failed, err := t.s.retry(t.ctx, func(actx context.Context) error {
		var err error
		resp, err = t.s.cli.Txn(actx).If(t.cmps...).Then(t.thens...).Else(t.elss...).Commit()
		return err
	})
	return resp, failed > 0, err
}
