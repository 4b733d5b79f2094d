package livekit

import (
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// TestConnState: the room's callbacks, in the orders the SDK sends them,
// give the state, the count of reconnects and the last reason.
func TestConnState(t *testing.T) {
	type step struct {
		ev     connEvent
		reason string
	}
	lost := step{evReconnecting, reasonConnectionLost}
	for _, tc := range []struct {
		name  string
		steps []step
		want  Status
	}{
		{"new", nil, Status{State: StateJoining}},
		{"join failed", []step{{evClosed, ""}}, Status{State: StateLeft}},
		{"joined", []step{{evJoined, ""}}, Status{State: StateJoined}},
		{"dropped", []step{{evJoined, ""}, lost}, Status{State: StateReconnecting, Reconnects: 1, LastError: reasonConnectionLost}},
		// A resume that fails escalates to a restart: both report
		// reconnecting, one drop.
		{"resume then restart", []step{{evJoined, ""}, lost, lost}, Status{State: StateReconnecting, Reconnects: 1, LastError: reasonConnectionLost}},
		{"back", []step{{evJoined, ""}, lost, {evReconnected, ""}}, Status{State: StateJoined, Reconnects: 1, LastError: reasonConnectionLost}},
		{"two drops", []step{{evJoined, ""}, lost, {evReconnected, ""}, lost, {evReconnected, ""}},
			Status{State: StateJoined, Reconnects: 2, LastError: reasonConnectionLost}},
		{"gave up", []step{{evJoined, ""}, lost, {evDisconnected, "connection to room failed"}},
			Status{State: StateLeft, Reconnects: 1, LastError: "connection to room failed"}},
		{"removed", []step{{evJoined, ""}, {evDisconnected, "removed by server"}}, Status{State: StateLeft, LastError: "removed by server"}},
		{"replaced", []step{{evJoined, ""}, {evDisconnected, "duplicate identity"}}, Status{State: StateLeft, LastError: "duplicate identity"}},
		{"closed", []step{{evJoined, ""}, {evClosed, ""}}, Status{State: StateLeft}},
		// Nothing revives a left connection, and Close after a
		// disconnection keeps its reason.
		{"left stays left", []step{{evJoined, ""}, {evDisconnected, "room closed"}, lost, {evReconnected, ""}, {evClosed, ""}},
			Status{State: StateLeft, LastError: "room closed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConnState()
			for _, s := range tc.steps {
				c.apply(s.ev, s.reason)
			}
			if got := c.get(); got != tc.want {
				t.Errorf("status %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestConnStateLongReason: a reason is cut to a bounded, valid UTF-8 text.
func TestConnStateLongReason(t *testing.T) {
	c := newConnState()
	c.apply(evDisconnected, strings.Repeat("é", maxErrorLen))
	got := c.get().LastError
	if len(got) > maxErrorLen+len("…") || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Errorf("last error of %d bytes (valid %v): %q", len(got), utf8.ValidString(got), got)
	}
}

// TestConnStateConcurrent: callbacks and readers on other goroutines
// (run with -race).
func TestConnStateConcurrent(t *testing.T) {
	c := newConnState()
	c.apply(evJoined, "")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				c.apply(evReconnecting, reasonConnectionLost)
				c.apply(evReconnected, "")
				_ = c.get()
			}
		})
	}
	wg.Wait()
	if st := c.get(); st.State != StateJoined || st.Reconnects == 0 || st.Reconnects > 800 {
		t.Errorf("status %+v", st)
	}
}
