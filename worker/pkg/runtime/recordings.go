package runtime

import fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"

// RecordingEnded is a recording that has ended, for whatever reason (a
// stop, its session's end, a limit, a failure), with its final state.
type RecordingEnded struct {
	SessionID string
	// Recording is the final state (WorkerId left for the caller to set).
	Recording *fleetv1.Recording
}

// RecordingReporter is implemented by runtimes that record sessions. The
// worker writes what it reports into the session's record, so a recording
// that ended with its session shows its final state without anyone asking.
type RecordingReporter interface {
	// RecordingsEnded delivers ended recordings. A runtime never blocks on
	// this channel: reports that find it full are dropped (and logged).
	// The channel closes after Close.
	RecordingsEnded() <-chan RecordingEnded
}
