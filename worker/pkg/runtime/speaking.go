package runtime

import (
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Speaking is a change of a session's speaking state, aligned with the media:
// Started when the frame carrying the first speech was sent, !Started when
// the last one was.
type Speaking struct {
	SessionID string
	Started   bool
	// MediaTime is the media time of that frame (the session's media clock).
	MediaTime time.Duration
	// Session is the session's record as given to Start (its owner scopes
	// who may see the event); callers must not modify it.
	Session *fleetv1.Session
}

// SpeakingReporter is implemented by runtimes that produce media and so know
// when a session speaks. The worker publishes what it reports as the
// session.speaking_started and session.speaking_ended events.
type SpeakingReporter interface {
	// Speaking delivers speaking changes, in order per session. A runtime
	// never blocks its media on this channel: changes that find it full are
	// dropped (and counted). The channel closes after Close.
	Speaking() <-chan Speaking
}
