package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Live migration on drain. The leader moves the live sessions of every
// worker that an admin drained with migrate (drain mark "migrate") or that
// drains itself with Worker.migrate (SIGTERM with capacity elsewhere), one
// session at a time:
//
//  1. wait for an idle moment (the session is not speaking), at most
//     IdleWait: then go anyway, a sentence restarts at worst;
//  2. BeginMigration: the record goes READY on a target slot reserved by
//     the same conditions as a create's, migrating_from naming the source
//     slot, whose key stays: the source keeps serving;
//  3. StartSession on the target (undone by AbortMigration if it fails);
//  4. viewers follow the record change (session.moved, derived from etcd):
//     wait until the target has as many connected viewers as the source
//     had, at most SwitchTimeout;
//  5. FinishMigration: the source slot key goes (the source's slot watch
//     stops the session there) and migrating_from is cleared.
//
// Every step is a transaction guarded by the record's revision, so a
// deposed leader finishing a step changes nothing. The record names the
// target before the source slot goes, so the reaper never mistakes step 5
// for a lost worker.

// WorkerDialer gives the gRPC client of one worker.
type WorkerDialer interface {
	Client(id, addr string) (fleetv1.WorkerServiceClient, error)
}

// MigrationOptions tune live migration.
type MigrationOptions struct {
	// Interval is how often the leader looks for workers to empty.
	Interval time.Duration
	// IdleWait bounds the wait for a session to stop speaking.
	IdleWait time.Duration
	// SwitchTimeout bounds the wait for viewers to reach the target.
	SwitchTimeout time.Duration
	// CallTimeout bounds one call to a worker (StartSession included).
	CallTimeout time.Duration
	// Poll is the interval of the idle and switch checks.
	Poll time.Duration
	// Replay, when set, re-sends what is left of a moved session's durable
	// speech queue to its new worker once the source has stopped (a
	// session still speaking after IdleWait restarts its sentence there).
	Replay func(ctx context.Context, sess *fleetv1.Session) error
}

func (o *MigrationOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = 500 * time.Millisecond
	}
	if o.IdleWait <= 0 {
		o.IdleWait = 3 * time.Second
	}
	if o.SwitchTimeout <= 0 {
		o.SwitchTimeout = 3 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 10 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 50 * time.Millisecond
	}
}

// errNoTarget: no other worker has a free slot for the session now.
var errNoTarget = errors.New("no target with a free slot")

// wantsMigration reports whether a worker's live sessions should move.
func wantsMigration(v registry.WorkerView) bool {
	if v.Down {
		return false // lost or failing: re-placement's business
	}
	return (v.Drained && v.Migrate) ||
		(v.Worker.GetState() == fleetv1.WorkerState_WORKER_STATE_DRAINING && v.Worker.GetMigrate())
}

// migrateLoop empties the workers that ask for it, while this replica leads.
func (s *Supervisor) migrateLoop(ctx context.Context) error {
	if s.opts.Workers == nil {
		<-ctx.Done()
		return nil
	}
	mo := s.opts.Migration
	mo.defaults()
	tick := time.NewTicker(mo.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for _, v := range s.opts.Registry.Workers() {
			if ctx.Err() != nil {
				return nil
			}
			if wantsMigration(v) && v.Sessions > 0 {
				s.migrateWorker(ctx, mo, v.Worker.GetId())
			}
		}
	}
}

// migrateWorker moves the sessions of one worker, one by one; it stops at
// the first session that finds no target (the next round tries again).
func (s *Supervisor) migrateWorker(ctx context.Context, mo MigrationOptions, worker string) {
	ids, err := s.opts.Store.WorkerSessionIDs(ctx, worker)
	if err != nil {
		s.log.Warn("migration: list sessions", "worker", worker, "err", err)
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		err := s.migrateSession(ctx, mo, worker, id)
		switch {
		case errors.Is(err, errNoTarget):
			s.log.Debug("migration: no capacity elsewhere yet", "worker", worker, "session", id)
			return
		case err != nil:
			s.log.Warn("migration failed; the session stays", "worker", worker, "session", id, "err", err)
		}
	}
}

// migrateSession moves one session off worker src, if it is still there
// and ready.
func (s *Supervisor) migrateSession(ctx context.Context, mo MigrationOptions, src, id string) error {
	sess, rev, err := s.opts.Store.Session(ctx, id)
	if errors.Is(err, fleetstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if from := sess.GetMigratingFrom(); from != nil {
		// A leader stopped halfway: finish or undo what it began.
		if from.GetWorkerId() == src {
			return s.resumeMigration(ctx, mo, sess, rev)
		}
		return nil
	}
	if sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY || sess.GetWorkerId() != src {
		return nil
	}
	srcView, ok := s.opts.Registry.Worker(src)
	if !ok {
		return nil
	}
	start := time.Now()
	viewers, err := s.waitIdle(ctx, mo, srcView, id)
	if err != nil {
		return err
	}
	// Waiting may have taken a while: act on the record as it is now.
	if sess, rev, err = s.opts.Store.Session(ctx, id); err != nil {
		return err
	}
	if sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY || sess.GetWorkerId() != src || sess.GetMigratingFrom() != nil {
		return nil
	}
	refused := map[string]bool{src: true}
	for attempt := 0; attempt < 8; attempt++ {
		target, gpu, slot, err := s.pickTarget(sess, refused)
		if err != nil {
			return err
		}
		moved, mrev, ok, err := s.opts.Store.BeginMigration(ctx, sess, rev, fleetstore.Reservation{
			Worker: target.Worker.GetId(), WorkerLease: target.Lease, WorkerRevision: target.Revision, GPU: gpu, Slot: slot,
		}, fleetstore.MoveReasonDrain)
		if err != nil {
			return err
		}
		if !ok {
			// Lost a race for the slot, or the record changed: look again.
			if sess, rev, err = s.opts.Store.Session(ctx, id); err != nil {
				return err
			}
			if sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY || sess.GetWorkerId() != src || sess.GetMigratingFrom() != nil {
				return nil
			}
			continue
		}
		s.opts.Registry.NoteReserved(target.Worker.GetId(), registry.SlotRef{GPU: gpu, Slot: slot}, id)
		if err := s.startTarget(ctx, mo, target.Worker, moved, mrev); err != nil {
			s.log.Warn("migration: target refused the session; undoing", "session", id, "target", target.Worker.GetId(), "err", err)
			if _, aerr := s.abort(ctx, mo, sess, moved, mrev); aerr != nil {
				return fmt.Errorf("undo migration of %s to %s after %v: %w", id, target.Worker.GetId(), err, aerr)
			}
			refused[target.Worker.GetId()] = true
			if sess, rev, err = s.opts.Store.Session(ctx, id); err != nil {
				return err
			}
			continue
		}
		switched := s.waitViewers(ctx, mo, target.Worker, id, viewers)
		done, err := s.finish(ctx, moved, mrev)
		if err != nil {
			return err
		}
		if mo.Replay != nil && done != nil {
			if err := mo.Replay(ctx, done); err != nil {
				s.log.Warn("migration: replay speech on the target", "session", id, "err", err)
			}
		}
		s.log.Info("session migrated", "session", id, "from", src, "to", target.Worker.GetId(),
			"viewers", viewers, "viewers_switched", switched, "took", time.Since(start))
		return nil
	}
	return fmt.Errorf("migrate %s: %w after 8 attempts", id, errNoTarget)
}

// waitIdle waits until the session is not speaking, at most IdleWait, and
// returns how many viewers it has connected on its worker.
func (s *Supervisor) waitIdle(ctx context.Context, mo MigrationOptions, v registry.WorkerView, id string) (int, error) {
	deadline := time.Now().Add(mo.IdleWait)
	for {
		st, err := s.status(ctx, mo, v.Worker, id)
		if err != nil {
			return 0, fmt.Errorf("status of %s on %s: %w", id, v.Worker.GetId(), err)
		}
		if !st.GetSpeaking() || !time.Now().Before(deadline) {
			return connectedViewers(st), nil
		}
		if !sleep(ctx, mo.Poll) {
			return 0, ctx.Err()
		}
	}
}

// waitViewers waits until the target has want connected viewers of the
// session, at most SwitchTimeout; it returns how many it has.
func (s *Supervisor) waitViewers(ctx context.Context, mo MigrationOptions, w *fleetv1.Worker, id string, want int) int {
	deadline := time.Now().Add(mo.SwitchTimeout)
	for {
		got := 0
		if st, err := s.status(ctx, mo, w, id); err == nil {
			got = connectedViewers(st)
		}
		if got >= want || !time.Now().Before(deadline) || !sleep(ctx, mo.Poll) {
			return got
		}
	}
}

func connectedViewers(st *fleetv1.SessionStatusResponse) int {
	n := 0
	for _, v := range st.GetStats().GetViewers() {
		if v.GetState() == "connected" {
			n++
		}
	}
	return n
}

func (s *Supervisor) status(ctx context.Context, mo MigrationOptions, w *fleetv1.Worker, id string) (*fleetv1.SessionStatusResponse, error) {
	cl, err := s.opts.Workers.Client(w.GetId(), w.GetGrpcAddress())
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, mo.CallTimeout)
	defer cancel()
	return cl.SessionStatus(cctx, &fleetv1.SessionStatusRequest{SessionId: id})
}

func (s *Supervisor) startTarget(ctx context.Context, mo MigrationOptions, w *fleetv1.Worker, sess *fleetv1.Session, rev int64) error {
	cl, err := s.opts.Workers.Client(w.GetId(), w.GetGrpcAddress())
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, mo.CallTimeout)
	defer cancel()
	if _, err := cl.StartSession(cctx, &fleetv1.StartSessionRequest{Session: sess, ReservationRevision: rev}); err != nil {
		return fmt.Errorf("start session on %s: %w", w.GetId(), err)
	}
	return nil
}

// abort undoes BeginMigration with a context of its own (the leader's may
// be what ended).
func (s *Supervisor) abort(ctx context.Context, mo MigrationOptions, orig, moved *fleetv1.Session, rev int64) (int64, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mo.CallTimeout)
	defer cancel()
	return s.opts.Store.AbortMigration(actx, orig, moved, rev)
}

// finish frees the source slot and returns the record as it left it (nil
// when the session ended meanwhile). A record changed meanwhile is read
// again: an ended session freed both slots already; one still migrating is
// finished at its new revision.
func (s *Supervisor) finish(ctx context.Context, moved *fleetv1.Session, rev int64) (*fleetv1.Session, error) {
	for range 5 {
		done, _, err := s.opts.Store.FinishMigration(ctx, moved, rev)
		if !errors.Is(err, fleetstore.ErrConflict) {
			return done, err
		}
		cur, crev, err := s.opts.Store.Session(ctx, moved.GetId())
		if errors.Is(err, fleetstore.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if fleetstore.Terminal(cur.GetState()) || cur.GetMigratingFrom() == nil {
			return nil, nil
		}
		moved, rev = cur, crev
	}
	return nil, fmt.Errorf("finish migration of %s: %w", moved.GetId(), fleetstore.ErrConflict)
}

// resumeMigration finishes a migration a former leader began when the
// target runs the session, and undoes it when the target does not.
func (s *Supervisor) resumeMigration(ctx context.Context, mo MigrationOptions, moved *fleetv1.Session, rev int64) error {
	target, ok := s.opts.Registry.Worker(moved.GetWorkerId())
	if ok {
		_, err := s.status(ctx, mo, target.Worker, moved.GetId())
		if err == nil {
			_, err := s.finish(ctx, moved, rev)
			return err
		}
		if status.Code(err) != codes.NotFound {
			return fmt.Errorf("resume migration of %s: %w", moved.GetId(), err)
		}
	}
	from := moved.GetMigratingFrom()
	orig := proto.CloneOf(moved)
	orig.WorkerId, orig.Gpu, orig.Slot = from.GetWorkerId(), from.GetGpu(), from.GetSlot()
	orig.MigratingFrom = nil
	orig.Moves = max(orig.GetMoves(), 1) - 1
	_, err := s.abort(ctx, mo, orig, moved, rev)
	return err
}

// pickTarget chooses the eligible worker with the most free slots (the
// session's avatar and voice served, active, neither drained nor down) and
// a free slot on it, as the registry sees it; the transaction checks.
func (s *Supervisor) pickTarget(sess *fleetv1.Session, skip map[string]bool) (registry.WorkerView, uint32, uint32, error) {
	type cand struct {
		v    registry.WorkerView
		free int
	}
	var cands []cand
	for _, v := range s.opts.Registry.Workers() {
		if skip[v.Worker.GetId()] || !v.TakesSessions() || !v.ServesAvatar(sess.GetAvatar()) || !v.ServesVoice(sess.GetVoice()) {
			continue
		}
		if free := v.TotalSlots() - v.Sessions; free > 0 {
			cands = append(cands, cand{v, free})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].free > cands[j].free })
	for _, c := range cands {
		for _, g := range c.v.Worker.GetGpus() {
			slot, ok := s.opts.Registry.FreeSlot(c.v.Worker.GetId(), g.GetIndex(), int(g.GetSlots()), 0, func(uint32) bool { return false })
			if ok {
				return c.v, g.GetIndex(), slot, nil
			}
		}
	}
	return registry.WorkerView{}, 0, 0, errNoTarget
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
