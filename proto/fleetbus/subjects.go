package fleetbus

import (
	"errors"
	"fmt"
	"strings"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Token turns an id into one subject token. Worker ids are host names and
// may hold dots, which NATS reads as token separators: a worker "a" allowed
// avatarfleet.events.workers.a.sessions.* would otherwise match the subject
// of a worker named "a.sessions.x". Fleet names never hold '~', so the
// mapping of '.' to '~' is one to one.
func Token(id string) string { return strings.ReplaceAll(id, ".", "~") }

// validToken reports whether id makes a safe subject token: not empty, no
// whitespace, no wildcard.
func validToken(id string) bool {
	if id == "" || id == "*" || id == ">" {
		return false
	}
	return !strings.ContainsAny(id, " \t\r\n*>")
}

// SessionSubject is the subject a control plane publishes a session's
// events on.
func SessionSubject(session string) string { return SessionEventsPre + Token(session) }

// WorkerSubject is the subject of events about a worker (from the worker
// itself or from a control plane).
func WorkerSubject(worker string) string { return WorkerEventsPre + Token(worker) }

// WorkerSessionSubject is the subject a worker publishes the events of a
// session it hosts on.
func WorkerSessionSubject(worker, session string) string {
	return WorkerSubject(worker) + ".sessions." + Token(session)
}

// WorkerSessionsAll matches every session event a worker publishes.
func WorkerSessionsAll(worker string) string { return WorkerSubject(worker) + ".sessions.*" }

// WorkerSessionEventTypes are the session events a worker may publish
// about a session it hosts (the control plane publishes the others).
var workerSessionEventTypes = map[string]bool{
	SessionEnded:           true,
	SessionFailed:          true,
	SessionSpeakingStarted: true,
	SessionSpeakingEnded:   true,
}

// subject is where p publishes e.
func (p *Publisher) subject(e *fleetv1.Event) (string, error) {
	for _, id := range []string{e.GetSessionId(), e.GetWorkerId()} {
		if id != "" && !validToken(id) {
			return "", fmt.Errorf("id %q cannot be a subject token", id)
		}
	}
	if p.worker == "" {
		return Subject(e), nil
	}
	if w := e.GetWorkerId(); w != "" && w != p.worker {
		return "", fmt.Errorf("worker %s may not publish an event of worker %s", p.worker, w)
	}
	e.WorkerId = p.worker
	if e.GetSessionId() == "" {
		return WorkerSubject(p.worker), nil
	}
	if s := e.GetSession(); s != nil && (s.GetId() != e.GetSessionId() || s.GetWorkerId() != p.worker) {
		return "", fmt.Errorf("worker %s may not publish the record of session %s on worker %s", p.worker, s.GetId(), s.GetWorkerId())
	}
	if !workerSessionEventTypes[e.GetType()] {
		return "", fmt.Errorf("a worker may not publish %s", e.GetType())
	}
	return WorkerSessionSubject(p.worker, e.GetSessionId()), nil
}

// Origin is what an event's subject says about who published it.
type Origin struct {
	// Worker is the worker of a worker subject ("" on a control-plane
	// session subject).
	Worker string
	// FromWorker is true on WorkerSessionSubject: a worker published the
	// event about a session it says it hosts. A consumer that trusts the
	// event's session must also check that the session is hosted by Worker
	// (the session record in etcd says so).
	FromWorker bool
}

// ErrMismatch is the error of CheckEvent for an event that says something
// its subject does not allow.
var ErrMismatch = errors.New("event does not match its subject")

// CheckEvent checks that an event received on subject says only what a
// publisher allowed on that subject may say: an event on a worker's
// subjects names that worker, its session and the session's record match
// the subject, and a worker-published session event has a type workers
// publish. NATS permissions keep a worker off other workers' subjects; this
// check keeps it to its subjects' meaning.
func CheckEvent(subject string, e *fleetv1.Event) (Origin, error) {
	mismatch := func(format string, args ...any) (Origin, error) {
		return Origin{}, fmt.Errorf("%w: %s: %s", ErrMismatch, subject, fmt.Sprintf(format, args...))
	}
	if s := e.GetSession(); s != nil && s.GetId() != e.GetSessionId() {
		return mismatch("session record %q in an event of session %q", s.GetId(), e.GetSessionId())
	}
	if rest, ok := strings.CutPrefix(subject, SessionEventsPre); ok {
		if e.GetSessionId() == "" || rest != Token(e.GetSessionId()) {
			return mismatch("event of session %q", e.GetSessionId())
		}
		return Origin{}, nil
	}
	rest, ok := strings.CutPrefix(subject, WorkerEventsPre)
	if !ok {
		return mismatch("not an events subject")
	}
	parts := strings.Split(rest, ".")
	switch {
	case len(parts) == 1:
		if e.GetWorkerId() == "" || parts[0] != Token(e.GetWorkerId()) {
			return mismatch("event of worker %q", e.GetWorkerId())
		}
		if e.GetSessionId() != "" || e.GetSession() != nil {
			return mismatch("a session event on a worker subject")
		}
		return Origin{Worker: e.GetWorkerId()}, nil
	case len(parts) == 3 && parts[1] == "sessions":
		if e.GetWorkerId() == "" || parts[0] != Token(e.GetWorkerId()) {
			return mismatch("event of worker %q", e.GetWorkerId())
		}
		if e.GetSessionId() == "" || parts[2] != Token(e.GetSessionId()) {
			return mismatch("event of session %q", e.GetSessionId())
		}
		if s := e.GetSession(); s != nil && s.GetWorkerId() != e.GetWorkerId() {
			return mismatch("record of a session on worker %q", s.GetWorkerId())
		}
		if !workerSessionEventTypes[e.GetType()] {
			return mismatch("a worker may not publish %s", e.GetType())
		}
		return Origin{Worker: e.GetWorkerId(), FromWorker: true}, nil
	default:
		return mismatch("not an events subject")
	}
}

// WorkerInboxPrefix is the inbox prefix of a worker's NATS connection
// (nats.CustomInboxPrefix): the replies a worker waits for (JetStream
// acknowledgements) arrive under it, so NATS permissions can let a worker
// subscribe to its own inboxes and no one else's.
func WorkerInboxPrefix(worker string) string { return "_INBOX.avatarfleet-worker." + Token(worker) }

// Subject is the subject a control plane's publisher uses for e (a
// publisher scoped AsWorker uses its worker's subjects instead).
func Subject(e *fleetv1.Event) string {
	if e.GetSessionId() != "" {
		return SessionSubject(e.GetSessionId())
	}
	return WorkerSubject(e.GetWorkerId())
}
