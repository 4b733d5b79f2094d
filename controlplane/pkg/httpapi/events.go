package httpapi

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

const sseHeartbeat = 15 * time.Second

// events streams lifecycle events as server-sent events, one JSON event per
// message, its JetStream sequence as the SSE id. A client that reconnects
// with Last-Event-ID resumes after that event, missing nothing the stream
// still holds, and is told with a gap event when the stream no longer
// holds what follows it. Keys without the admin scope see only their own
// sessions' events.
func (a *API) events(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.opts.Events == nil {
		return errorf(http.StatusServiceUnavailable, apiv1.CodeUnavailable, "event stream unavailable")
	}
	release, err := a.limits.openStream(p)
	if err != nil {
		return err
	}
	defer release()
	return a.streamEvents(w, r, []string{fleetbus.EventsAll}, func(e *fleetv1.Event) bool {
		return p.Has(auth.ScopeAdmin) || (e.GetSession() != nil && e.GetSession().GetOwner() == p.Owner)
	})
}

// streamEvents serves the events of the stream's subjects as server-sent
// events until the client leaves: each event that keep accepts and whose
// subject vouches for it, as JSON, with its JetStream sequence as the SSE
// id. Last-Event-ID resumes after that sequence. GET /v1/events and GET
// /v1/sessions/{id}/events share it.
func (a *API) streamEvents(w http.ResponseWriter, r *http.Request, subjects []string, keep func(*fleetv1.Event) bool) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return fmt.Errorf("events: response writer cannot flush")
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	// A resume after events the stream no longer holds starts with a gap
	// event (eventgap.go).
	var gap *gapEvent
	ctx := r.Context()
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		// The next sequence must fit too: MaxUint64 would wrap to 0.
		seq, err := strconv.ParseUint(last, 10, 64)
		if err != nil || seq == math.MaxUint64 {
			return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "Last-Event-ID: want an event sequence number")
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
		if gap, err = a.eventGap(ctx, seq); err != nil {
			return err
		}
	}
	cons, err := a.opts.Events.OrderedConsumer(ctx, fleetbus.StreamName, cfg)
	if err != nil {
		return fmt.Errorf("events consumer: %w", err)
	}
	msgs := make(chan jetstream.Msg, 64)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("events consume: %w", err)
	}
	defer cc.Stop()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, ": avatarfleet events\n\n")
	if gap != nil {
		// No id: the client's Last-Event-ID stays where it was until the
		// next event.
		b, _ := json.Marshal(gap)
		_, _ = fmt.Fprintf(w, "event: gap\ndata: %s\n\n", b)
	}
	flusher.Flush()

	base := a.baseURL(r)
	records := a.sessionRecords()
	heartbeat := time.NewTicker(sseHeartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.opts.StreamsDone:
			return nil
		case <-heartbeat.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			flusher.Flush()
		case m := <-msgs:
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			e, err := fleetbus.DecodeEvent(m.Data())
			if err != nil {
				a.log.Warn("skip undecodable event", "subject", m.Subject(), "err", err)
				continue
			}
			if !keep(e) {
				continue
			}
			if err := checkEventOrigin(ctx, records, m.Subject(), e); err != nil {
				a.log.Warn("drop event that its subject does not vouch for", "subject", m.Subject(), "type", e.GetType(), "err", err)
				continue
			}
			b, err := json.Marshal(toEvent(e, base))
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", meta.Sequence.Stream, e.GetType(), b); err != nil {
				return nil
			}
			flusher.Flush()
		}
	}
}

func toEvent(e *fleetv1.Event, base string) apiv1.Event {
	out := apiv1.Event{
		ID:         e.GetId(),
		Type:       e.GetType(),
		Time:       e.GetTime().AsTime(),
		SessionID:  e.GetSessionId(),
		WorkerID:   e.GetWorkerId(),
		Worker:     toWorkerRecord(e.GetWorker()),
		FromWorker: e.GetFromWorker(),
		ToWorker:   e.GetToWorker(),
		Reason:     e.GetReason(),
		Revision:   e.GetRevision(),
	}
	if e.GetMediaTime() != nil {
		ms := e.GetMediaTime().AsDuration().Milliseconds()
		out.MediaTimeMS = &ms
	}
	if e.GetSession() != nil {
		s := toSession(e.GetSession(), base)
		out.Session = &s
	}
	return out
}
