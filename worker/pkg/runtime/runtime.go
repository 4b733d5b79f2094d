// Package runtime defines the session runtime of a worker: what runs one
// avatar session on its reserved slot (start, speech, interrupt, stop) and how
// it reports a session that ended on its own. The gRPC server, the slot watch
// and the drain logic talk to a Runtime only: the media pipeline
// (mediaruntime) in production, runtimetest.Holder in tests.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Errors a Runtime returns (wrapped); callers map them with errors.Is.
var (
	// ErrNotFound: no running session has that id.
	ErrNotFound = errors.New("session not found")
	// ErrInvalidInput: the request itself is wrong (bad text, bad audio,
	// unknown device or slot).
	ErrInvalidInput = errors.New("invalid input")
	// ErrSlotBusy: the slot is still held by another local session (its stop
	// has not finished yet); retrying later may succeed.
	ErrSlotBusy = errors.New("slot busy")
	// ErrClosed: the runtime is shutting down and takes no new work.
	ErrClosed = errors.New("runtime closed")
	// ErrRoomJoin: the session's external room (a LiveKit room) refused
	// it or could not be reached; another worker would fare no better.
	ErrRoomJoin = errors.New("cannot join the session's room")
)

// Limits on speech input, shared by every implementation (the REST API
// enforces the same numbers, but the worker must not trust its caller).
const (
	MaxTextChars = 10000
	MaxWAVBytes  = 50 << 20
)

// Status is a session as the runtime sees it.
type Status struct {
	State      fleetv1.SessionState
	Speaking   bool
	FramesSent uint64
	// LiveKit is the session's LiveKit room connection; nil when it
	// joined none.
	LiveKit *fleetv1.LiveKitStatus
}

// Ended reports a session that ended on the runtime's own initiative (a
// pipeline error, an idle timeout, …), not through Stop. The worker turns it
// into the session's terminal record in etcd.
type Ended struct {
	SessionID string
	// State is SESSION_STATE_ENDED or SESSION_STATE_FAILED.
	State   fleetv1.SessionState
	Reason  fleetv1.EndReason
	Message string
}

// Runtime runs the sessions of one worker. Every method is safe for
// concurrent use.
type Runtime interface {
	// Start begins a session on its reserved GPU and slot. Starting a session
	// that already runs on the same slot succeeds (retried requests).
	Start(ctx context.Context, sess *fleetv1.Session) error
	// Stop ends a session; the reason is informational (logs, metrics). It
	// returns ErrNotFound for a session that is not running.
	Stop(ctx context.Context, id string, reason fleetv1.EndReason) error
	// Speak queues text to be spoken; interrupt first drops queued speech.
	Speak(ctx context.Context, id, text string, interrupt bool) error
	// PushAudio queues a whole WAV file to be spoken.
	PushAudio(ctx context.Context, id string, wav []byte, interrupt bool) error
	// Interrupt drops all queued speech of a session.
	Interrupt(ctx context.Context, id string) error
	// Status reports one running session.
	Status(id string) (Status, error)
	// Sessions lists the ids of running sessions.
	Sessions() []string
	// Ended delivers sessions that ended on their own. Each such session is
	// delivered once; the channel closes after Close.
	Ended() <-chan Ended
	// Close stops every session (without reporting them on Ended) and refuses
	// new ones.
	Close(ctx context.Context) error
}

// ValidateText checks speech text: valid UTF-8 of 1..MaxTextChars characters.
func ValidateText(text string) error {
	if !utf8.ValidString(text) {
		return fmt.Errorf("text is not valid UTF-8: %w", ErrInvalidInput)
	}
	n := utf8.RuneCountInString(text)
	if n == 0 || n > MaxTextChars {
		return fmt.Errorf("text has %d characters, want 1..%d: %w", n, MaxTextChars, ErrInvalidInput)
	}
	return nil
}

// ValidateWAVHeader checks that b looks like a RIFF/WAVE file of acceptable
// size. Decoding the format chunk is the pipeline's job.
func ValidateWAVHeader(b []byte) error {
	if len(b) > MaxWAVBytes {
		return fmt.Errorf("audio is %d bytes, limit %d: %w", len(b), MaxWAVBytes, ErrInvalidInput)
	}
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return fmt.Errorf("audio is not a RIFF/WAVE file: %w", ErrInvalidInput)
	}
	return nil
}
