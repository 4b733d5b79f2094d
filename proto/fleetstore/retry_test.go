package fleetstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRetriable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{rpctypes.ErrNoLeader, true},
		{rpctypes.ErrLeaderChanged, true},
		{rpctypes.ErrTimeout, true},
		{rpctypes.ErrGRPCNoLeader, true},
		{fmt.Errorf("reserve: %w", context.DeadlineExceeded), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{status.Error(codes.Unknown, "raft: stopped"), true},
		{rpctypes.ErrCompacted, false},
		{rpctypes.ErrPermissionDenied, false},
		{rpctypes.ErrLeaseNotFound, false},
		{status.Error(codes.Unknown, "something else"), false},
		{errors.New("plain"), false},
	}
	for _, tt := range tests {
		if got := Retriable(tt.err); got != tt.want {
			t.Errorf("Retriable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestNextTimeout: a few timed-out attempts (a dead leader's forwarded
// requests) keep their bound; more in a row double it, up to 8 × base.
func TestNextTimeout(t *testing.T) {
	const base = 500 * time.Millisecond
	cur := base
	var got []time.Duration
	for timeouts := 1; timeouts <= 7; timeouts++ {
		cur = nextTimeout(cur, base, timeouts)
		got = append(got, cur)
	}
	want := []time.Duration{base, base, 2 * base, 4 * base, 8 * base, 8 * base, 8 * base}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("bounds after 1..7 timeouts: %v, want %v", got, want)
	}
	if d := nextTimeout(4*base, base, 0); d != 4*base {
		t.Errorf("after an answer that was no timeout: %v, want the bound kept", d)
	}
}
