package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Bounds on writing speech progress.
const (
	speechAckTimeout  = 5 * time.Second  // one etcd transaction
	speechAckRetryFor = 30 * time.Second // one ack, retries included
	maxSpeechAcks     = 4096             // queued acks; older ones are dropped
)

// speechStore is the part of fleetstore.Store speech progress needs.
type speechStore interface {
	AckSpeech(ctx context.Context, sessionID, speechID, prev, remaining string) (bool, error)
}

// speechAck says that of the queued text speechID of a session, which held
// prev, only rest is left to speak.
type speechAck struct {
	session, id, prev, rest string
}

// speechAcks writes the sessions' speech progress to their durable speech
// queues in etcd (server.SpeechProgress): one goroutine applies the acks in
// the order they came, each a conditional transaction (fleetstore.AckSpeech:
// only if the entry still holds what this worker last wrote), so an ack
// never resurrects an entry an interrupt or the session's end cleared, nor
// undoes another worker's progress. Acks are best effort, retried for a
// while: one lost to a crash or an etcd outage leaves the sentence in the
// queue, and it is spoken again if the session moves — speech is delivered
// at least once, at sentence granularity.
type speechAcks struct {
	store speechStore
	log   *slog.Logger

	mu    sync.Mutex
	queue []speechAck
	wake  chan struct{}
}

func newSpeechAcks(store speechStore, log *slog.Logger) *speechAcks {
	return &speechAcks{store: store, log: log, wake: make(chan struct{}, 1)}
}

// Track implements server.SpeechProgress. The callback is called by one
// session's media goroutine, in order, so it keeps the text it last
// reported as the next ack's expected value.
func (a *speechAcks) Track(sessionID, speechID, text string) func(remaining string) {
	prev := text
	return func(rest string) {
		a.push(speechAck{session: sessionID, id: speechID, prev: prev, rest: rest})
		prev = rest
	}
}

// push queues an ack without blocking; it merges with a queued ack of the
// same text that it follows (the entry goes from that one's prev to rest in
// one write).
func (a *speechAcks) push(ack speechAck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	merged := false
	for i := len(a.queue) - 1; i >= 0; i-- {
		q := &a.queue[i]
		if q.session == ack.session && q.id == ack.id {
			if q.rest == ack.prev {
				q.rest, merged = ack.rest, true
			}
			break
		}
	}
	if !merged {
		if len(a.queue) >= maxSpeechAcks {
			// Dropping an ack only makes the later ones of its text fail
			// their condition: the text stays queued (at least once).
			a.log.Warn("speech progress backlog full: oldest ack dropped", "session", a.queue[0].session, "speech", a.queue[0].id)
			a.queue = a.queue[1:]
		}
		a.queue = append(a.queue, ack)
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run applies queued acks until ctx ends; those still queued then are lost
// (the texts stay in etcd until the session's end clears them).
func (a *speechAcks) Run(ctx context.Context) {
	for {
		a.mu.Lock()
		var ack speechAck
		next := len(a.queue) > 0
		if next {
			ack = a.queue[0]
			a.queue[0] = speechAck{}
			a.queue = a.queue[1:]
		}
		a.mu.Unlock()
		if !next {
			select {
			case <-ctx.Done():
				return
			case <-a.wake:
				continue
			}
		}
		a.apply(ctx, ack)
		if ctx.Err() != nil {
			return
		}
	}
}

func (a *speechAcks) apply(ctx context.Context, ack speechAck) {
	ok, err := backoff.Retry(ctx, func() (bool, error) {
		actx, cancel := context.WithTimeout(ctx, speechAckTimeout)
		defer cancel()
		return a.store.AckSpeech(actx, ack.session, ack.id, ack.prev, ack.rest)
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(speechAckRetryFor))
	switch {
	case err != nil && ctx.Err() == nil:
		a.log.Warn("speech progress not recorded: the sentence may be spoken again if the session moves",
			"session", ack.session, "speech", ack.id, "err", err)
	case err == nil && !ok:
		// Cleared (interrupt, session end) or moved on by another worker.
		a.log.Debug("speech progress: entry changed, ack dropped", "session", ack.session, "speech", ack.id)
	}
}
