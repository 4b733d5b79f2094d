// Package fleetbus is the fleet's use of NATS: the subjects, the JetStream
// stream that keeps lifecycle events, and the publisher every component uses.
//
// Subjects (ids as subject tokens, see Token):
//
//	avatarfleet.events.sessions.<session>                  Event from a control plane
//	avatarfleet.events.workers.<worker>                    Event about a worker
//	avatarfleet.events.workers.<worker>.sessions.<session> Event from the worker hosting the session
//	avatarfleet.health.<worker id>                         health request/reply (nats micro)
//
// Every events subject is kept by the JetStream stream AVATARFLEET_EVENTS.
// The layout lets NATS permissions bind a worker to its own subjects: a
// worker publishes only under avatarfleet.events.workers.<its id> (see
// WorkerSessionSubject and AsWorker), and a consumer checks with CheckEvent
// that an event says what its subject allows.
package fleetbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Subjects and names shared by publishers and subscribers.
const (
	EventsPrefix     = "avatarfleet.events."
	EventsAll        = "avatarfleet.events.>"
	SessionEventsPre = "avatarfleet.events.sessions."
	WorkerEventsPre  = "avatarfleet.events.workers."
	StreamName       = "AVATARFLEET_EVENTS"

	HealthServiceName = "avatarfleet-worker"
	HealthSubjectPre  = "avatarfleet.health."
)

// Event types.
const (
	SessionPlacing  = "session.placing"
	SessionStarting = "session.starting"
	SessionReady    = "session.ready"
	SessionEnded    = "session.ended"
	SessionFailed   = "session.failed"
	// SessionMoved: the session runs on another worker now (re-placed after
	// its worker was lost, or migrated off a draining one); Event.FromWorker,
	// ToWorker and Reason say from where, to where and why.
	SessionMoved = "session.moved"
	// SessionSpeakingStarted and SessionSpeakingEnded come from the worker
	// when the first / last frame of speech leaves the session's pipeline;
	// Event.MediaTime is that frame's media time.
	SessionSpeakingStarted = "session.speaking_started"
	SessionSpeakingEnded   = "session.speaking_ended"
	WorkerRegistered       = "worker.registered"
	WorkerDraining         = "worker.draining"
	WorkerUndrained        = "worker.undrained"
	WorkerDown             = "worker.down"
	WorkerUp               = "worker.up"
	WorkerLost             = "worker.lost"
	WorkerDeregistered     = "worker.deregistered"
)

// HealthSubject is the subject a worker answers health requests on.
func HealthSubject(worker string) string { return HealthSubjectPre + worker }

// Publisher publishes lifecycle events.
type Publisher struct {
	js    jetstream.JetStream
	async bool
	// worker, when set, scopes the publisher to one worker's subjects.
	worker string
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// AsWorker scopes a publisher to worker id: it publishes session events on
// the worker's own subjects (WorkerSessionSubject) and refuses events that
// name another worker, so it publishes nothing a worker's NATS permissions
// (WorkerPermissions in proto/embedded) would refuse.
func AsWorker(id string) PublisherOption { return func(p *Publisher) { p.worker = id } }

// NewPublisher returns a publisher over nc.
func NewPublisher(nc *nats.Conn, opts ...PublisherOption) (*Publisher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p := &Publisher{js: js}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// NewAsyncPublisher returns a publisher whose Publish does not wait for the
// stream's acknowledgement, keeping a round trip off request paths; events
// from one publisher still reach the stream in order. onError sees each
// event the stream refused. Call Flush before closing the connection.
func NewAsyncPublisher(nc *nats.Conn, onError func(subject string, err error), opts ...PublisherOption) (*Publisher, error) {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			if onError != nil {
				onError(m.Subject, err)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p := &Publisher{js: js, async: true}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Flush waits until every asynchronous publish is acknowledged or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush events: %w", ctx.Err())
	}
}

// JetStream is the publisher's JetStream context.
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// SessionEvent builds an event about a session record.
func SessionEvent(typ string, s *fleetv1.Session) *fleetv1.Event {
	return &fleetv1.Event{Type: typ, SessionId: s.GetId(), WorkerId: s.GetWorkerId(), Session: withoutSecrets(s)}
}

// withoutSecrets is s without its LiveKit access token: events are kept in
// JetStream and sent to webhooks, the token stays in etcd.
func withoutSecrets(s *fleetv1.Session) *fleetv1.Session {
	if s.GetLivekit().GetToken() == "" {
		return s
	}
	c := proto.Clone(s).(*fleetv1.Session)
	c.Livekit.Token = ""
	return c
}

// SpeakingEvent builds a session.speaking_started (started) or
// session.speaking_ended event about s at media time at.
func SpeakingEvent(started bool, s *fleetv1.Session, at time.Duration) *fleetv1.Event {
	typ := SessionSpeakingEnded
	if started {
		typ = SessionSpeakingStarted
	}
	e := SessionEvent(typ, s)
	e.MediaTime = durationpb.New(at)
	return e
}

// WorkerEvent builds an event about a worker.
func WorkerEvent(typ, workerID string, w *fleetv1.Worker) *fleetv1.Event {
	return &fleetv1.Event{Type: typ, WorkerId: workerID, Worker: w}
}

// Publish stamps an event with an id and time and publishes it, waiting for
// the stream's acknowledgement unless the publisher is asynchronous. The
// event id doubles as the JetStream message
// id, so a retried publish is stored once.
//
// A publisher scoped AsWorker stamps the event with its worker id and
// refuses one about another worker's session.
func (p *Publisher) Publish(ctx context.Context, e *fleetv1.Event) error {
	if e.GetSessionId() == "" && e.GetWorkerId() == "" {
		return errors.New("publish event: neither session nor worker id")
	}
	subject, err := p.subject(e)
	if err != nil {
		return fmt.Errorf("publish event %s: %w", e.GetType(), err)
	}
	if e.Id == "" {
		e.Id = newEventID()
	}
	if e.Time == nil {
		e.Time = timestamppb.Now()
	}
	b, err := proto.Marshal(e)
	if err != nil {
		return fmt.Errorf("marshal event %s: %w", e.GetType(), err)
	}
	if p.async {
		if _, err := p.js.PublishAsync(subject, b, jetstream.WithMsgID(e.Id)); err != nil {
			return fmt.Errorf("publish event %s on %s: %w", e.GetType(), subject, err)
		}
		return nil
	}
	if _, err := p.js.Publish(ctx, subject, b, jetstream.WithMsgID(e.Id)); err != nil {
		return fmt.Errorf("publish event %s on %s: %w", e.GetType(), subject, err)
	}
	return nil
}

// DecodeEvent decodes an event message body.
func DecodeEvent(b []byte) (*fleetv1.Event, error) {
	e := &fleetv1.Event{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	return e, nil
}

func newEventID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "evt_" + hex.EncodeToString(b[:])
}
