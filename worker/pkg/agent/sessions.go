package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// How hard the worker tries to record an end it initiated before leaving
// it to the control plane (which sees the session gone from the worker).
const (
	endAttempts = 5
	endBackoff  = 100 * time.Millisecond
)

// endSession ends a running session on the worker's initiative (drain
// deadline, worker failure): stop it here, then record the end in etcd.
func (in *instance) endSession(ctx context.Context, id string, state fleetv1.SessionState, reason fleetv1.EndReason, msg string) {
	in.watch.Untrack(id)
	if err := in.rt.Stop(ctx, id, reason); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		in.log.Warn("stop session", "session", id, "err", err)
	}
	in.recordEnd(ctx, id, state, reason, msg)
}

// recordEnd moves the session record to its terminal state and frees its
// slot (one transaction; exactly one party wins).
func (in *instance) recordEnd(ctx context.Context, id string, state fleetv1.SessionState, reason fleetv1.EndReason, msg string) {
	backoff := endBackoff
	for attempt := 1; ; attempt++ {
		sess, ended, err := in.store.EndSessionOn(ctx, in.opts.ID, id, state, reason, msg)
		if err == nil {
			if !ended {
				in.log.Debug("session already ended by someone else", "session", id, "reason", sess.GetEndReason().String())
				return
			}
			// The control plane's event log announces the end from the
			// record (session.ended / session.failed).
			in.log.Info("session ended", "session", id, "state", state.String(), "reason", reason.String())
			return
		}
		if errors.Is(err, fleetstore.ErrNotFound) {
			in.log.Warn("ended session has no record", "session", id)
			return
		}
		if attempt == endAttempts || ctx.Err() != nil {
			in.log.Error("could not record the end of a session", "session", id, "reason", reason.String(), "err", err)
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff *= 2
	}
}

// reportEnded records every session the runtime ends on its own.
func (in *instance) reportEnded(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-in.rt.Ended():
			if !ok {
				return
			}
			in.watch.Untrack(e.SessionID)
			state := e.State
			if !fleetstore.Terminal(state) {
				state = fleetv1.SessionState_SESSION_STATE_FAILED
			}
			in.recordEnd(ctx, e.SessionID, state, e.Reason, e.Message)
		}
	}
}

// reportSpeaking publishes the runtime's speaking changes as
// session.speaking_started / session.speaking_ended events, one at a time,
// so each session's events reach the stream in the order they happened.
// The event carries the session's record (its owner scopes who sees it on
// GET /v1/events) in the ready state: only a running session speaks.
func (in *instance) reportSpeaking(ctx context.Context, sr runtime.SpeakingReporter) {
	for {
		select {
		case <-ctx.Done():
			return
		case sp, ok := <-sr.Speaking():
			if !ok {
				return
			}
			rec := &fleetv1.Session{Id: sp.SessionID, WorkerId: in.opts.ID}
			if sp.Session != nil {
				rec = proto.CloneOf(sp.Session)
			}
			rec.State = fleetv1.SessionState_SESSION_STATE_READY
			e := fleetbus.SpeakingEvent(sp.Started, rec, sp.MediaTime)
			if err := in.events.Publish(ctx, e); err != nil {
				in.log.Warn("publish speaking event failed", "session", sp.SessionID, "type", e.GetType(), "err", err)
			}
		}
	}
}

// reportRecordings writes the final state of every recording the runtime
// ends into its session's record (a recording that ended with its session,
// or at a limit, shows it without anyone asking the worker). A record that
// is gone is left alone; other failures are retried a few times.
func (in *instance) reportRecordings(ctx context.Context, rr runtime.RecordingReporter) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-rr.RecordingsEnded():
			if !ok {
				return
			}
			rec := proto.CloneOf(e.Recording)
			rec.WorkerId = in.opts.ID
			backoff := endBackoff
			for attempt := 1; ; attempt++ {
				_, err := in.store.PutRecording(ctx, e.SessionID, rec)
				if err == nil || errors.Is(err, fleetstore.ErrNotFound) || errors.Is(err, fleetstore.ErrTooManyRecordings) {
					break
				}
				if attempt == endAttempts || ctx.Err() != nil {
					in.log.Warn("could not record a recording's end", "session", e.SessionID, "recording", rec.GetId(), "err", err)
					break
				}
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				backoff *= 2
			}
		}
	}
}

// onLeaseLost stops every local session: their slots went with the lease,
// and the control plane reports them failed (worker_lost) or re-places them.
func (in *instance) onLeaseLost(ctx context.Context, lost clientv3.LeaseID) {
	ids := in.rt.Sessions()
	in.log.Warn("lease lost; stopping all sessions", "lease", fmt.Sprintf("%x", lost), "sessions", len(ids))
	for _, id := range ids {
		in.watch.Untrack(id)
		if err := in.rt.Stop(ctx, id, fleetv1.EndReason_END_REASON_WORKER_LOST); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			in.log.Warn("stop session", "session", id, "err", err)
		}
	}
}

// stopForSlot is the slot watch's action: the session's slot key is gone
// (the control plane ended it, or a reaper), so stop it here.
func (in *instance) stopForSlot(ctx context.Context, id string, reason fleetv1.EndReason) {
	if err := in.rt.Stop(ctx, id, reason); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		in.log.Warn("stop session whose slot is gone", "session", id, "err", err)
	}
}
