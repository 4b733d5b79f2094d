package livekit

import (
	"sync"
	"unicode/utf8"
)

// Connection states of an avatar's room connection (Status.State).
const (
	StateJoining      = "joining"
	StateJoined       = "joined"
	StateReconnecting = "reconnecting"
	StateLeft         = "left"
)

// maxErrorLen bounds Status.LastError, in bytes.
const maxErrorLen = 200

// Status is an avatar's room connection as the SDK reported it.
type Status struct {
	// State is StateJoining until the join succeeded, StateJoined while
	// connected, StateReconnecting while the SDK resumes or restarts a
	// dropped connection, StateLeft once the connection is gone for good
	// (a disconnection, or Close).
	State string
	// Reconnects counts the drops the SDK began reconnecting from.
	Reconnects uint32
	// LastError is the reason of the last drop or disconnection: short
	// text, never the token; empty if none.
	LastError string
}

// connEvent is what a room callback reports.
type connEvent int

const (
	evJoined       connEvent = iota // the join succeeded
	evReconnecting                  // the connection dropped; the SDK resumes or restarts it
	evReconnected                   // it is back
	evDisconnected                  // the server or the SDK ended it (with a reason)
	evClosed                        // the avatar left on its own (Close, a failed join)
)

// connState tracks an avatar's Status from the room's callbacks; it is
// safe for concurrent use.
type connState struct {
	mu sync.Mutex
	st Status
}

func newConnState() *connState { return &connState{st: Status{State: StateJoining}} }

// apply moves the state on an event. A left connection stays left: the
// SDK never reconnects a room it disconnected.
func (c *connState) apply(ev connEvent, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.State == StateLeft {
		return
	}
	switch ev {
	case evJoined, evReconnected:
		c.st.State = StateJoined
	case evReconnecting:
		if c.st.State != StateReconnecting {
			c.st.Reconnects++
		}
		c.st.State = StateReconnecting
		if reason != "" {
			c.st.LastError = shorten(reason)
		}
	case evDisconnected:
		c.st.State = StateLeft
		if reason != "" {
			c.st.LastError = shorten(reason)
		}
	case evClosed:
		c.st.State = StateLeft
	}
}

func (c *connState) get() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

func (c *connState) is(state string) bool { return c.get().State == state }

// shorten cuts s to maxErrorLen bytes on a rune boundary.
func shorten(s string) string {
	if len(s) <= maxErrorLen {
		return s
	}
	s = s[:maxErrorLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
