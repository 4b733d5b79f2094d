package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// maxResponseBody is how much of a receiver's answer is read (and
// discarded, so the connection can be reused).
const maxResponseBody = 64 << 10

// ackTimeout bounds the wait for JetStream to confirm an acknowledgement.
const ackTimeout = 5 * time.Second

// userAgent names the sender to receivers.
const userAgent = "AvatarFleet-Webhooks/1"

type endpointState struct {
	Endpoint
	consumer string
	log      *slog.Logger
}

func newEndpointState(ep Endpoint) *endpointState {
	return &endpointState{Endpoint: ep, consumer: ConsumerName(ep.Owner, ep.URL)}
}

// retry runs f until it succeeds or ctx ends, with jittered backoff.
func (r *Runner) retry(ctx context.Context, what string, f func(context.Context) error) {
	bo := backoff.NewExponentialBackOff()
	bo.MaxInterval = 30 * time.Second
	for {
		err := f(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		d := bo.NextBackOff()
		r.log.Warn(what, "err", err, "retry_in", d)
		if !sleep(ctx, d) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// runEndpoint pulls the endpoint's events, at most Concurrency at once,
// until ctx ends, and waits for the attempts under way.
func (r *Runner) runEndpoint(ctx context.Context, ep *endpointState) {
	ep.log = r.log.With("consumer", ep.consumer, "endpoint", redact(ep.URL))
	conc := r.opts.Concurrency
	// done has room for every attempt, so a finishing one never blocks.
	done := make(chan struct{}, conc)
	inFlight := 0
	defer func() {
		for ; inFlight > 0; inFlight-- {
			<-done
		}
	}()
	var cons jetstream.Consumer
	bo := backoff.NewExponentialBackOff()
	// Short, so deliveries resume within seconds of NATS coming back.
	bo.MaxInterval = 5 * time.Second
	for ctx.Err() == nil {
		if cons == nil {
			c, err := r.ensure(ctx, ep.consumer)
			if err != nil {
				d := bo.NextBackOff()
				ep.log.Warn("webhook consumer unavailable", "err", err, "retry_in", d)
				sleep(ctx, d)
				continue
			}
			cons = c
		}
		// Pull only as many events as there are free slots, so none waits
		// in a local buffer while its ack wait runs out.
		for inFlight > 0 && len(done) > 0 {
			<-done
			inFlight--
		}
		if inFlight == conc {
			select {
			case <-done:
				inFlight--
			case <-ctx.Done():
				return
			}
		}
		n := conc - inFlight
		// A pull is not cut short when ctx ends: events the server sent
		// for it would wait out their ack wait. They arrive, and handle
		// hands them straight back.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.pollWait)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
		if err == nil {
			for m := range batch.Messages() {
				inFlight++
				go func() {
					defer func() { done <- struct{}{} }()
					r.handle(ctx, ep, m)
				}()
			}
			err = batch.Error()
		}
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil, errors.Is(err, context.DeadlineExceeded):
			// Events, or none before the pull expired.
			bo.Reset()
		default:
			// The consumer may be gone (deleted, or NATS lost its state):
			// ensure it again before the next pull.
			cons = nil
			d := bo.NextBackOff()
			ep.log.Warn("pull webhook events", "err", err, "retry_in", d)
			sleep(ctx, d)
		}
	}
}

// outcome of one attempt.
type outcome int

const (
	delivered outcome = iota
	failed
	dropped
)

// handle settles one delivery of an event: acknowledged after a 2xx (or
// when the event is not the endpoint's), retried later after a failure,
// terminated and counted after the last attempt.
func (r *Runner) handle(ctx context.Context, ep *endpointState, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		ep.log.Warn("webhook event without metadata", "err", err)
		_ = m.Term()
		return
	}
	e, err := fleetbus.DecodeEvent(m.Data())
	if err != nil {
		ep.log.Warn("skip undecodable event", "subject", m.Subject(), "seq", meta.Sequence.Stream, "err", err)
		_ = m.Term()
		return
	}
	if !ep.wants(e) {
		_ = m.Ack()
		return
	}
	if ctx.Err() != nil {
		// Stopping: another replica (or this one, restarted) takes it now.
		_ = m.Nak()
		return
	}
	attempt := int(meta.NumDelivered)
	log := ep.log.With("event", e.GetId(), "type", e.GetType(), "seq", meta.Sequence.Stream, "attempt", attempt)
	if attempt > r.opts.Retry.MaxAttempts {
		// Its last attempt was cut short (a replica stopped mid-POST).
		r.deadLetter(log, m, errors.New("attempts spent"))
		return
	}
	id := e.GetId()
	if id == "" {
		// Every published event has an id; the stream sequence keeps one
		// stable across retries otherwise.
		id = "seq_" + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	res, err := r.attempt(ctx, ep, m.Subject(), id, e)
	switch {
	case res == delivered:
		// Confirmed, so a lost acknowledgement (a NATS permission that
		// lacks $JS.ACK) is logged, not silent redeliveries.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		if err := m.DoubleAck(actx); err != nil {
			log.Warn("ack a delivered webhook event (it will be delivered again)", "err", err)
		}
		cancel()
		r.metrics.deliveries.Inc()
		if t := e.GetTime(); t != nil {
			r.metrics.latency.Observe(time.Since(t.AsTime()).Seconds())
		}
	case res == dropped:
		// Untrusted (its subject does not vouch for it) or unencodable:
		// no later attempt would send it.
		log.Warn("drop a webhook event", "subject", m.Subject(), "err", err)
		_ = m.Term()
	case ctx.Err() != nil:
		// Stopping: another replica (or this one, restarted) retries now.
		_ = m.Nak()
	case attempt >= r.opts.Retry.MaxAttempts:
		r.deadLetter(log, m, err)
	default:
		d := r.opts.Retry.delay(attempt)
		log.Info("webhook attempt failed", "err", err, "retry_in", d)
		if err := m.NakWithDelay(d); err != nil {
			log.Warn("nak a failed webhook event (redelivered after the ack wait)", "err", err)
		}
	}
}

func (r *Runner) deadLetter(log *slog.Logger, m jetstream.Msg, err error) {
	log.Warn("webhook event given up after its last attempt", "err", err)
	if terr := m.Term(); terr != nil {
		log.Warn("terminate a dead webhook event", "err", terr)
	}
	r.metrics.deadLetters.Inc()
}

// attempt checks e's origin and POSTs it once.
func (r *Runner) attempt(ctx context.Context, ep *endpointState, subject, id string, e *fleetv1.Event) (outcome, error) {
	if r.opts.CheckOrigin != nil {
		if err := r.opts.CheckOrigin(ctx, subject, e); err != nil {
			if r.opts.Untrusted != nil && errors.Is(err, r.opts.Untrusted) {
				return dropped, err
			}
			r.metrics.failures.WithLabelValues(reasonOrigin).Inc()
			return failed, fmt.Errorf("check origin: %w", err)
		}
	}
	body, err := r.opts.Encode(e)
	if err != nil {
		return dropped, err
	}
	return r.post(ctx, ep, id, body)
}

func (r *Runner) post(ctx context.Context, ep *endpointState, id string, body []byte) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	ts := r.opts.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return dropped, fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(ep.Secret, id, ts, body))
	start := time.Now()
	resp, err := r.client.Do(req)
	if err != nil {
		r.metrics.requests.Observe(time.Since(start).Seconds())
		r.metrics.failures.WithLabelValues(reasonTransport).Inc()
		return failed, fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	_ = resp.Body.Close()
	r.metrics.requests.Observe(time.Since(start).Seconds())
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		r.metrics.failures.WithLabelValues(reasonStatus).Inc()
		return failed, fmt.Errorf("receiver answered %s", resp.Status)
	}
	return delivered, nil
}

// delay is how long after failed attempt n (from 1) the next one is made:
// Initial·2^(n-1) capped at Max, jittered uniformly into its upper half so
// replicas retrying many events do not strike together. It is computed
// from the attempt number because JetStream, not this process, keeps the
// count between attempts.
func (p Retry) delay(n int) time.Duration {
	d := p.Max
	if n <= 1 {
		d = p.Initial
	} else if n < 63 && p.Initial > 0 && p.Initial <= p.Max>>(n-1) {
		d = p.Initial << (n - 1)
	}
	d = min(d, p.Max)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
