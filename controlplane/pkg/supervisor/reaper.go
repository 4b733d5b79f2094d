package supervisor

import (
	"context"
	"errors"
	"strings"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// A live session always has its slot key: both are written in one
// transaction, and ending a session removes the key in the same transaction
// that ends the record. So a slot key that vanishes while its session is
// live means the worker's lease expired or was revoked: the worker is lost.
// The session is then re-placed on another worker (restart_policy
// on_worker_lost, the default) or failed with worker_lost (never). Every
// such step is guarded by the record's revision and its slot key's, read
// after the deletion was seen, so a deletion seen for an earlier placement
// attempt of the same session id (a create that went elsewhere) changes
// nothing.

// startGrace is how long a create's reservation may stay starting before
// the reaper assumes its replica died and ends it.
const startGrace = 2 * time.Minute

// reaper follows session records and slot keys with one list-and-watch. It
// is made per leadership term; its calls are never concurrent (ListWatch),
// its jobs run on their own goroutines.
type reaper struct {
	s     *Supervisor
	keys  fleetstore.Keys
	slots map[string]string // slot key → session id, as the watch saw it
	jobs  *jobs
}

// Replacer re-places a session whose worker was lost; its record is at
// revision rev, placing (or starting after an earlier attempt). It returns
// once the session is ready elsewhere or has failed, or with an error when
// the record changed under it (sessions.Manager implements it).
type Replacer interface {
	Replace(ctx context.Context, id string, rev int64, reason string) (*fleetv1.Session, error)
}

// reaperStore is the part of the store the reaper uses.
type reaperStore interface {
	Keys() fleetstore.Keys
	ListWatch(ctx context.Context, opts fleetstore.ListWatchOptions, h fleetstore.Handler) error
	SessionWithSlot(ctx context.Context, id string) (fleetstore.SessionSlot, error)
	MarkLost(ctx context.Context, ss fleetstore.SessionSlot, now time.Time) (*fleetv1.Session, int64, error)
	FailLost(ctx context.Context, ss fleetstore.SessionSlot, message string) (*fleetv1.Session, error)
	EndSessionAt(ctx context.Context, sess *fleetv1.Session, rev int64, state fleetv1.SessionState, reason fleetv1.EndReason, message string) (*fleetv1.Session, error)
	UpdateSession(ctx context.Context, sess *fleetv1.Session, rev int64) (int64, error)
	Worker(ctx context.Context, id string) (*fleetv1.Worker, error)
	DeleteSessionRecord(ctx context.Context, id string, rev int64) error
}

// capacityWaker is a Replacer that waits for capacity and can be told a
// slot freed.
type capacityWaker interface{ CapacityChanged() }

// reapLoop runs the reaper until ctx ends (leadership lost), then waits for
// its jobs: a job cut short leaves its record placing or starting, and the
// next leader's listing takes it over.
func (s *Supervisor) reapLoop(ctx context.Context) error {
	r := &reaper{s: s, keys: s.store.Keys(), slots: map[string]string{}}
	r.jobs = newJobs(ctx, s.opts.ReplaceConcurrency, r.handle)
	defer r.jobs.wait()
	return s.store.ListWatch(ctx, fleetstore.ListWatchOptions{
		// Worker records and drain/health marks only wake sessions waiting
		// for capacity (a worker joins, is undrained or comes back up).
		Prefixes: []string{r.keys.Sessions(), r.keys.Slots(), r.keys.Workers(), r.keys.Drains(), r.keys.Healths()},
		PrevKV:   true,
		Resync:   s.opts.ReconcileInterval,
		Name:     "reaper",
		Log:      s.log,
	}, r)
}

// Replace implements fleetstore.Handler: a full listing (first, and every
// ReconcileInterval) checks every session against its slot, picks up
// re-placements a previous leader left, ends placements a crashed replica
// left half done, and deletes ended records past retention.
func (r *reaper) Replace(ctx context.Context, kvs []fleetstore.KV, _ int64) {
	clear(r.slots)
	var sessions []fleetstore.KV
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv.Key, r.keys.Slots()):
			r.slots[kv.Key] = string(kv.Value)
		case strings.HasPrefix(kv.Key, r.keys.Sessions()):
			sessions = append(sessions, kv)
		}
	}
	now := time.Now()
	for _, kv := range sessions {
		r.checkRecord(ctx, kv, now, true)
	}
}

// Apply implements fleetstore.Handler.
func (r *reaper) Apply(ctx context.Context, events []fleetstore.Event, _ int64) {
	now := time.Now()
	freed := false
	defer func() {
		// Sessions waiting for capacity try again at once.
		if w, ok := r.s.opts.Replacer.(capacityWaker); ok && freed {
			w.CapacityChanged()
		}
	}()
	for _, ev := range events {
		slot := strings.HasPrefix(ev.KV.Key, r.keys.Slots())
		switch {
		case slot && ev.Type == fleetstore.EventPut:
			r.slots[ev.KV.Key] = string(ev.KV.Value)
		case slot:
			delete(r.slots, ev.KV.Key)
			if ev.Prev != nil && len(ev.Prev.Value) > 0 {
				r.jobs.start(string(ev.Prev.Value))
			}
			freed = true
		case ev.Type == fleetstore.EventPut && strings.HasPrefix(ev.KV.Key, r.keys.Sessions()):
			r.checkRecord(ctx, ev.KV, now, false)
		case ev.Type == fleetstore.EventPut && strings.HasPrefix(ev.KV.Key, r.keys.Workers()),
			ev.Type == fleetstore.EventDelete && (strings.HasPrefix(ev.KV.Key, r.keys.Drains()) || strings.HasPrefix(ev.KV.Key, r.keys.Healths())):
			freed = true
		}
	}
}

// checkRecord looks at one session record as listed or watched and starts a
// job for it when it may need one. The job decides on a fresh read.
func (r *reaper) checkRecord(ctx context.Context, kv fleetstore.KV, now time.Time, listing bool) {
	sess, err := fleetstore.DecodeSession(kv.Value)
	if err != nil {
		r.s.log.Warn("undecodable session record", "key", kv.Key, "err", err)
		return
	}
	switch st := sess.GetState(); {
	case fleetstore.Terminal(st):
		if listing && now.Sub(sess.GetEndedAt().AsTime()) > r.s.opts.Retention {
			if err := r.s.store.DeleteSessionRecord(ctx, sess.GetId(), kv.ModRevision); err != nil {
				r.s.log.Warn("expire session record", "session", sess.GetId(), "err", err)
			}
		}
	case st == fleetv1.SessionState_SESSION_STATE_PLACING || sess.GetLostAt() != nil:
		r.jobs.start(sess.GetId()) // a re-placement: in a job already, or left by a previous leader
	case st == fleetv1.SessionState_SESSION_STATE_STARTING:
		// A create in flight: its replica owns the record (and undoes it if
		// the start fails), unless that replica died before its ready mark
		// or its start completed (settleCreate, in a job: it asks a worker).
		if listing && now.Sub(sess.GetCreatedAt().AsTime()) > recoverAfter {
			r.jobs.start(sess.GetId())
		}
	case st == fleetv1.SessionState_SESSION_STATE_READY:
		if r.slots[r.keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())] != sess.GetId() {
			r.jobs.start(sess.GetId()) // its slot went (or the watch of slots is behind: the job reads)
		}
	}
}

// handle is one job: it reads the session and its slot, and re-places or
// fails it if its worker was lost. A guarded step that finds the record
// changed reads again.
func (r *reaper) handle(ctx context.Context, id string) {
	for attempt := 0; attempt < 8 && ctx.Err() == nil; attempt++ {
		retry, err := r.handleOnce(ctx, id)
		if err != nil && ctx.Err() == nil {
			r.s.log.Warn("handle session of a lost worker", "session", id, "err", err)
		}
		if !retry {
			return
		}
	}
}

func (r *reaper) handleOnce(ctx context.Context, id string) (retry bool, err error) {
	ss, err := r.s.store.SessionWithSlot(ctx, id)
	if errors.Is(err, fleetstore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	sess, rev := ss.Session, ss.Revision
	switch {
	case fleetstore.Terminal(sess.GetState()):
		return false, nil
	case sess.GetState() == fleetv1.SessionState_SESSION_STATE_PLACING || sess.GetLostAt() != nil:
		// Being re-placed: by a previous leader, or by this one before a
		// record change restarted the job.
	case sess.GetState() == fleetv1.SessionState_SESSION_STATE_STARTING:
		return r.settleCreate(ctx, ss)
	case ss.SlotHeld:
		return false, nil
	case sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY:
		return false, nil // a create in flight owns it (see checkRecord)
	default:
		return r.workerLost(ctx, ss)
	}
	return r.replace(ctx, id, rev)
}

// workerLost handles a live session whose slot is gone (its worker was
// lost): it fails it with worker_lost (restart_policy never, or no
// re-placement here) or marks it lost and re-places it.
func (r *reaper) workerLost(ctx context.Context, ss fleetstore.SessionSlot) (retry bool, err error) {
	sess := ss.Session
	log := r.s.log.With("session", sess.GetId(), "worker", sess.GetWorkerId())
	if r.s.opts.Replacer == nil || sess.GetRestartPolicy() == fleetv1.RestartPolicy_RESTART_POLICY_NEVER {
		_, err := r.s.store.FailLost(ctx, ss, "worker "+sess.GetWorkerId()+" was lost")
		if errors.Is(err, fleetstore.ErrConflict) {
			return true, nil
		}
		if err == nil {
			log.Info("session failed: worker lost")
		}
		return false, err
	}
	_, rev, err := r.s.store.MarkLost(ctx, ss, time.Now())
	if errors.Is(err, fleetstore.ErrConflict) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	log.Info("worker lost: re-placing session")
	return r.replace(ctx, sess.GetId(), rev)
}

// replace re-places a session marked lost, at revision rev.
func (r *reaper) replace(ctx context.Context, id string, rev int64) (retry bool, err error) {
	if r.s.opts.Replacer == nil {
		return false, nil
	}
	// Replace retries within the session's deadline by itself; an error
	// means the record changed under it (or leadership ended): read again.
	if _, err := r.s.opts.Replacer.Replace(ctx, id, rev, fleetstore.MoveReasonWorkerLost); err != nil {
		r.s.log.Info("re-placement stopped; reading the record again", "session", id, "err", err)
		return true, nil
	}
	return false, nil
}
