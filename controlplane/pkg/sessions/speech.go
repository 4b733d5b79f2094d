package sessions

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// ErrSpeechQueueFull: the session's durable speech queue holds its limit of
// text not yet spoken (fleetstore.MaxPendingSpeech); retry once some of it
// has been spoken. It is the store's error, passed through.
var ErrSpeechQueueFull = fleetstore.ErrSpeechQueueFull

// Speak queues text on the session's worker. The text is written to the
// session's durable speech queue in etcd first and forwarded with its
// speech id; the worker shortens the entry as it speaks each sentence, so
// if the session moves to another worker, replaySpeech sends what is left.
// interrupt empties the queue (in etcd and on the worker) first. A text the
// worker did not accept is taken out of the queue again, unless the worker
// failed because the session is moving (speakAfterMove).
func (m *Manager) Speak(ctx context.Context, id, text string, interrupt bool) error {
	sess, cl, err := m.readySession(ctx, id)
	if err != nil {
		return err
	}
	speechID, err := m.opts.Store.EnqueueSpeech(ctx, id, text, interrupt)
	if err != nil {
		return speechStoreError(err)
	}
	req := &fleetv1.SpeakTextRequest{SessionId: id, Text: text, Interrupt: interrupt, SpeechId: speechID}
	err = m.sendSpeech(ctx, cl, req)
	if err == nil {
		return nil
	}
	if workerMayBeGone(err) {
		if handled, ferr := m.speakAfterMove(ctx, sess.GetWorkerId(), req); handled {
			return ferr
		}
	}
	// Never accepted: it must not be replayed on another worker. (If the
	// worker did accept it and the answer was lost, the text is spoken; its
	// acks then find no entry and change nothing.)
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.CallTimeout)
	defer dcancel()
	if derr := m.opts.Store.DeleteSpeech(dctx, id, speechID); derr != nil {
		m.log.Warn("take refused speech out of the queue", "session", id, "speech", speechID, "err", derr)
	}
	return grpcError("speak", err)
}

func (m *Manager) sendSpeech(ctx context.Context, cl fleetv1.WorkerServiceClient, req *fleetv1.SpeakTextRequest) error {
	cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	_, err := cl.SpeakText(cctx, req)
	return err
}

// workerMayBeGone reports whether a worker's failure to take a text may
// mean that the session left it: the worker is unreachable, or it no
// longer runs the session (fenced, or a migration's target not started).
func workerMayBeGone(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.NotFound:
		return true
	}
	return false
}

// speakAfterMove handles a text whose worker, from, failed as if the
// session had left it, by reading the record again. While the session is
// being re-placed or migrated, the text stays queued: the move replays the
// queue once the session is ready on its new worker, and it reads the
// queue after this text was written (etcd orders the two), so it is
// spoken there. When the session is already ready on another worker, the
// text goes there with its speech id; a worker that already got it from
// the replay ignores it. handled is false when the session did not move
// (the failure stands) or the new worker refused the text too.
func (m *Manager) speakAfterMove(ctx context.Context, from string, req *fleetv1.SpeakTextRequest) (handled bool, err error) {
	sess, _, err := m.opts.Store.Session(ctx, req.GetSessionId())
	if err != nil {
		return false, nil
	}
	log := m.log.With("session", sess.GetId(), "speech", req.GetSpeechId(), "from", from)
	switch {
	case beingReplaced(sess) || sess.GetMigratingFrom() != nil:
		log.Info("speech queued while the session moves: the move replays it")
		return true, nil
	case sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY || sess.GetWorkerId() == from:
		return false, nil
	}
	cl, err := m.workerClient(sess)
	if err != nil {
		return false, nil
	}
	if err := m.sendSpeech(ctx, cl, req); err != nil {
		log.Info("speech refused by the session's new worker too", "to", sess.GetWorkerId(), "err", err)
		return false, nil
	}
	log.Info("speech sent to the session's new worker", "to", sess.GetWorkerId())
	return true, nil
}

// Interrupt empties the session's speech queues: the durable one in etcd,
// then the worker's.
func (m *Manager) Interrupt(ctx context.Context, id string) error {
	cl, err := m.readyClient(ctx, id)
	if err != nil {
		return err
	}
	if err := m.opts.Store.ClearSpeech(ctx, id); err != nil {
		return fmt.Errorf("interrupt %s: %w", id, err)
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	if _, err := cl.Interrupt(cctx, &fleetv1.InterruptRequest{SessionId: id}); err != nil {
		return grpcError("interrupt", err)
	}
	return nil
}

// replaySpeech sends what is left of a session's durable speech queue, in
// the order it was queued and with the entries' speech ids, to the worker
// that now hosts the session (after a re-placement or a migration started
// it there). Each entry holds whole sentences: the one being spoken when
// the old worker stopped starts again. It stops at the first text the
// worker refuses; what was sent is spoken, what was not stays queued.
func (m *Manager) replaySpeech(ctx context.Context, sess *fleetv1.Session) error {
	entries, err := m.opts.Store.PendingSpeech(ctx, sess.GetId())
	if err != nil {
		return fmt.Errorf("replay speech of %s: %w", sess.GetId(), err)
	}
	if len(entries) == 0 {
		return nil
	}
	view, ok := m.opts.Registry.Worker(sess.GetWorkerId())
	if !ok {
		return fmt.Errorf("replay speech of %s: worker %s: %w", sess.GetId(), sess.GetWorkerId(), ErrUnavailable)
	}
	cl, err := m.opts.Workers.Client(view.Worker.GetId(), view.Worker.GetGrpcAddress())
	if err != nil {
		return fmt.Errorf("replay speech of %s: %w", sess.GetId(), err)
	}
	for i, e := range entries {
		cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
		_, err := cl.SpeakText(cctx, &fleetv1.SpeakTextRequest{SessionId: sess.GetId(), Text: e.Text, SpeechId: e.ID})
		cancel()
		if err != nil {
			return fmt.Errorf("replay speech of %s: text %d of %d: %w", sess.GetId(), i+1, len(entries), grpcError("speak", err))
		}
	}
	m.log.Info("speech replayed", "session", sess.GetId(), "worker", sess.GetWorkerId(), "texts", len(entries))
	return nil
}

// speechStoreError maps the speech queue's store errors onto the package's.
func speechStoreError(err error) error {
	switch {
	case errors.Is(err, fleetstore.ErrSpeechQueueFull):
		return err
	case errors.Is(err, fleetstore.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, fleetstore.ErrSessionEnded):
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	case errors.Is(err, fleetstore.ErrConflict):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// ReplaySpeech is replaySpeech for other duties that move a session (the
// supervisor's live migration).
func (m *Manager) ReplaySpeech(ctx context.Context, sess *fleetv1.Session) error {
	return m.replaySpeech(ctx, sess)
}
