package eventlog_test

import (
	"fmt"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// TestCatchUpAfterOutage measures how soon a backlog of events that piled
// up in etcd while NATS was away is in the stream once NATS is back.
func TestCatchUpAfterOutage(t *testing.T) {
	r := newRig(t)
	r.start("a")
	r.warmUp()
	r.nats.Stop()
	const n = 300
	for i := range n {
		id := fmt.Sprintf("s%03d", i)
		r.session(id, fleetv1.SessionState_SESSION_STATE_STARTING)
		r.session(id, fleetv1.SessionState_SESSION_STATE_READY)
		r.session(id, fleetv1.SessionState_SESSION_STATE_ENDED)
	}
	time.Sleep(3 * time.Second) // an outage longer than a publish attempt
	if err := r.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	got := r.waitFor(60*time.Second, "the backlog", func(s []stored) bool { return len(s) >= 3*n })
	took := time.Since(back)
	checkLog(t, got, n)
	t.Logf("a backlog of %d events was in the stream %s after NATS came back (%.0f events/s)", len(got), took.Round(10*time.Millisecond), float64(len(got))/took.Seconds())
}
