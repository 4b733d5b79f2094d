package supervisor

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// recoverAfter is how old a create's starting record must be before the
// reaper looks at it. A create answers once its worker runs the session and
// writes the ready mark off the critical path (sessions' batch writer); a
// replica that dies in between leaves a starting record whose worker runs
// the session. recoverAfter exceeds the create's start timeout (10 s by
// default), so a create still waiting for its worker is not raced.
const recoverAfter = 30 * time.Second

// settleCreate handles a create's starting record older than recoverAfter:
// if its slot is held and its worker reports the session running, it writes
// the ready mark the creating replica did not; past startGrace it fails the
// record, as a placement that did not complete. A record whose slot is gone
// lost its worker: the create answered (its ready mark was given up, or its
// replica died before writing it) and the session is handled as a lost live
// one, re-placed or failed with worker_lost by its restart_policy. Every
// step is guarded by the record's revision (retry on a conflict).
func (r *reaper) settleCreate(ctx context.Context, ss fleetstore.SessionSlot) (retry bool, err error) {
	sess, rev := ss.Session, ss.Revision
	age := time.Since(sess.GetCreatedAt().AsTime())
	if age < recoverAfter {
		return false, nil // a create in flight owns it
	}
	if !ss.SlotHeld {
		// The reservation wrote the slot with the record and only the end
		// of the session or the loss of the worker's lease removes it. A
		// replica that died mid-create together with its worker also ends
		// here: the session is then re-placed though its create failed,
		// and idles out (idle_timeout) unless someone uses it.
		return r.workerLost(ctx, ss)
	}
	if r.workerRuns(ctx, sess) {
		ready := proto.Clone(sess).(*fleetv1.Session)
		ready.State = fleetv1.SessionState_SESSION_STATE_READY
		ready.PlacedAt = timestamppb.Now()
		_, err := r.s.store.UpdateSession(ctx, ready, rev)
		if errors.Is(err, fleetstore.ErrConflict) {
			return true, nil
		}
		if err == nil {
			r.s.log.Info("ready mark recovered: the worker runs the session", "session", sess.GetId(), "worker", sess.GetWorkerId())
		}
		return false, err
	}
	if age < startGrace {
		return false, nil
	}
	_, err = r.s.store.EndSessionAt(ctx, sess, rev, fleetv1.SessionState_SESSION_STATE_FAILED,
		fleetv1.EndReason_END_REASON_ERROR, "placement did not complete")
	if errors.Is(err, fleetstore.ErrConflict) {
		return true, nil
	}
	return false, err
}

// workerRuns asks the session's worker whether it runs the session.
func (r *reaper) workerRuns(ctx context.Context, sess *fleetv1.Session) bool {
	if r.s.opts.Workers == nil {
		return false
	}
	w, err := r.s.store.Worker(ctx, sess.GetWorkerId())
	if err != nil {
		return false
	}
	cl, err := r.s.opts.Workers.Client(w.GetId(), w.GetGrpcAddress())
	if err != nil {
		return false
	}
	mo := r.s.opts.Migration
	mo.defaults()
	cctx, cancel := context.WithTimeout(ctx, mo.CallTimeout)
	defer cancel()
	st, err := cl.SessionStatus(cctx, &fleetv1.SessionStatusRequest{SessionId: sess.GetId()})
	if err != nil {
		r.s.log.Info("ask worker about a starting session", "session", sess.GetId(), "worker", w.GetId(), "err", err)
		return false
	}
	return st.GetState() == fleetv1.SessionState_SESSION_STATE_READY
}
