package fleetbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Headers of an event derived from an etcd change (see Mark).
const (
	HeaderRevision = "Avatarfleet-Revision"
	HeaderIndex    = "Avatarfleet-Revision-Index"
	HeaderCount    = "Avatarfleet-Revision-Events"
)

// ErrInvalidEvent is the error of PublishMarked for an event that no retry
// can publish (an id that cannot be a subject token, say).
var ErrInvalidEvent = errors.New("event cannot be published")

// Mark places a derived lifecycle event in etcd's history: the change at
// Revision gave Count events, this is the Index-th (from 0). A control plane
// that takes over the event log resumes after the last mark in the stream.
type Mark struct {
	Revision int64
	Index    int
	Count    int
}

// Last reports whether the event is the last of its revision.
func (m Mark) Last() bool { return m.Index >= m.Count-1 }

// Before reports whether m comes before o in the log.
func (m Mark) Before(o Mark) bool {
	return m.Revision < o.Revision || (m.Revision == o.Revision && m.Index < o.Index)
}

// EventID is the id of the event at m: "<revision>-<index>". The same
// change always gives the same ids, so a re-published event is stored once
// (JetStream's duplicate window, keyed by Nats-Msg-Id) and a consumer can
// drop what it has seen.
func (m Mark) EventID() string {
	return strconv.FormatInt(m.Revision, 10) + "-" + strconv.Itoa(m.Index)
}

// MarkedMsgID is the JetStream message id of the derived event id on
// subject. The subject is part of it because the duplicate window is the
// whole stream's: a worker, which may publish on its own subjects, could
// otherwise publish an upcoming "<revision>-<n>" first and have the real
// event dropped as its duplicate.
func MarkedMsgID(id, subject string) string { return id + "@" + subject }

// PublishMarked publishes a lifecycle event derived from etcd and waits for
// the stream's acknowledgement. It stamps the event with the mark's id and
// revision (and the time, if unset), sends the id (with the subject,
// MarkedMsgID) as the JetStream message id and the mark as headers.
func (p *Publisher) PublishMarked(ctx context.Context, e *fleetv1.Event, m Mark) error {
	if p.worker != "" {
		return errors.New("publish derived event: a worker's publisher may not")
	}
	subject, err := p.subject(e)
	if err != nil {
		return fmt.Errorf("publish event %s: %w: %w", e.GetType(), ErrInvalidEvent, err)
	}
	e.Id, e.Revision = m.EventID(), m.Revision
	if e.Time == nil {
		e.Time = timestamppb.Now()
	}
	b, err := proto.Marshal(e)
	if err != nil {
		return fmt.Errorf("marshal event %s: %w: %w", e.GetType(), ErrInvalidEvent, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = b
	msg.Header.Set(HeaderRevision, strconv.FormatInt(m.Revision, 10))
	msg.Header.Set(HeaderIndex, strconv.Itoa(m.Index))
	msg.Header.Set(HeaderCount, strconv.Itoa(m.Count))
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(MarkedMsgID(e.Id, subject))); err != nil {
		return fmt.Errorf("publish event %s (%s) on %s: %w", e.GetType(), e.Id, subject, err)
	}
	return nil
}

// Marks are the marks of the last derived events in the stream: on the
// sessions' subjects (only control planes publish there) and on each
// worker's subject (where that worker may publish too, so a caller checks
// a worker's mark against etcd before it trusts it).
type Marks struct {
	// Sessions is the last mark on the sessions' subjects; its Count is 0
	// when there is none.
	Sessions Mark
	// Workers are the last marks on worker subjects, by worker id.
	Workers map[string]Mark
}

// LastMarks reads the marks of the last derived events in the stream. Only
// well-formed marks whose event id matches them count.
func (p *Publisher) LastMarks(ctx context.Context) (Marks, error) {
	out := Marks{Workers: map[string]Mark{}}
	st, err := p.js.Stream(ctx, StreamName)
	if err != nil {
		return out, fmt.Errorf("last event marks: %w", err)
	}
	last := func(subj string) (Mark, bool, error) {
		raw, err := st.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return Mark{}, false, nil
		}
		if err != nil {
			return Mark{}, false, fmt.Errorf("last event on %s: %w", subj, err)
		}
		m, ok := markOf(raw.Header, raw.Data)
		return m, ok, nil
	}
	m, ok, err := last(SessionEventsPre + "*")
	if err != nil {
		return out, err
	}
	if ok {
		out.Sessions = m
	}
	workers, err := p.EventWorkers(ctx)
	if err != nil {
		return out, err
	}
	for _, w := range workers {
		m, ok, err := last(WorkerSubject(w))
		if err != nil {
			return out, err
		}
		if ok {
			out.Workers[w] = m
		}
	}
	return out, nil
}

// LastMark is the greatest of LastMarks, trusted as it is; ok is false
// when the stream holds no mark.
func (p *Publisher) LastMark(ctx context.Context) (m Mark, ok bool, err error) {
	ms, err := p.LastMarks(ctx)
	if err != nil {
		return Mark{}, false, err
	}
	m, ok = ms.Sessions, ms.Sessions.Count > 0
	for _, w := range ms.Workers {
		if !ok || m.Before(w) {
			m, ok = w, true
		}
	}
	return m, ok, nil
}

// markOf reads a message's mark; valid is false when it has none or the
// event's id does not match it.
func markOf(h nats.Header, data []byte) (Mark, bool) {
	rev, err1 := strconv.ParseInt(h.Get(HeaderRevision), 10, 64)
	idx, err2 := strconv.Atoi(h.Get(HeaderIndex))
	n, err3 := strconv.Atoi(h.Get(HeaderCount))
	if err1 != nil || err2 != nil || err3 != nil || rev <= 0 || idx < 0 || idx >= n {
		return Mark{}, false
	}
	m := Mark{Revision: rev, Index: idx, Count: n}
	e, err := DecodeEvent(data)
	if err != nil || e.GetId() != m.EventID() || e.GetRevision() != rev {
		return Mark{}, false
	}
	return m, true
}

// LastEvent returns the last event stored on subject; ok is false when the
// stream holds none.
func (p *Publisher) LastEvent(ctx context.Context, subject string) (e *fleetv1.Event, ok bool, err error) {
	st, err := p.js.Stream(ctx, StreamName)
	if err != nil {
		return nil, false, fmt.Errorf("last event on %s: %w", subject, err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("last event on %s: %w", subject, err)
	}
	if e, err = DecodeEvent(raw.Data); err != nil {
		return nil, false, err
	}
	return e, true, nil
}

// EventWorkers returns the ids of the workers that have events about them
// (on WorkerSubject) in the stream.
func (p *Publisher) EventWorkers(ctx context.Context) ([]string, error) {
	st, err := p.js.Stream(ctx, StreamName)
	if err != nil {
		return nil, fmt.Errorf("workers with events: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(WorkerEventsPre+"*"))
	if err != nil {
		return nil, fmt.Errorf("workers with events: %w", err)
	}
	ids := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		if tok, ok := strings.CutPrefix(subj, WorkerEventsPre); ok {
			ids = append(ids, strings.ReplaceAll(tok, "~", "."))
		}
	}
	return ids, nil
}
