package sessions

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// DefaultReplaceTimeout is how long a session whose worker was lost waits
// for a new slot when neither its record nor Options say otherwise.
const DefaultReplaceTimeout = 60 * time.Second

// ErrMovedOn is returned by Replace when the session record is no longer
// the one the caller decided on (someone ended or moved it first).
var ErrMovedOn = errors.New("session record changed since it was read")

// ReplacesOnLoss reports whether a session is re-placed when its worker is
// lost (restart_policy on_worker_lost, the default) rather than failed.
func ReplacesOnLoss(sess *fleetv1.Session) bool {
	return sess.GetRestartPolicy() != fleetv1.RestartPolicy_RESTART_POLICY_NEVER
}

// Replace re-places a session whose worker was lost. Its record, at
// revision rev, is placing (the supervisor marked it lost) or starting on a
// worker an earlier attempt chose (a deposed leader's, taken over). The
// session is placed on another eligible worker by the reservation a create
// uses (same candidates, ranking and transaction, the record guarded by its
// revision instead of its absence), started there with the reservation's
// revision, and marked ready with moves+1, placed_at now and lost_at
// cleared; its id, avatar, voice, labels, lifetimes, owner and viewer tokens
// (bound to the id only) stay. With no capacity it tries again with jittered
// exponential backoff until the session's replace timeout (counted from
// lost_at) or its max duration (from created_at) passes, whichever is
// first, and then fails it with worker_lost. It returns the record as it
// left it; ErrMovedOn when someone else changed the record first.
func (m *Manager) Replace(ctx context.Context, id string, rev int64, reason string) (*fleetv1.Session, error) {
	sess, cur, err := m.d.store.Session(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("re-place session %s: %w", id, err)
	}
	if cur != rev || !beingReplaced(sess) {
		return sess, fmt.Errorf("re-place session %s at revision %d (now %d, %s): %w", id, rev, cur, sess.GetState(), ErrMovedOn)
	}
	p := &movePlacer{m: m, record: sess, rev: rev, reason: reason,
		release: []*fleetv1.SlotRef{fleetstore.SlotOf(sess), sess.GetMigratingFrom()}}
	refused := map[string]bool{}
	if sess.GetState() == fleetv1.SessionState_SESSION_STATE_STARTING {
		// An earlier attempt's start may still run there: go elsewhere.
		refused[sess.GetWorkerId()] = true
	}
	deadline := m.replaceDeadline(sess)
	if !time.Now().Before(deadline) {
		// Its max duration is over, or it waited its whole replace
		// timeout for its turn: starting it again would only end it.
		return m.failReplace(ctx, p, deadline)
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = m.opts.ReplaceMinBackoff, m.opts.ReplaceMaxBackoff
	for round := 1; ; round++ {
		woken := m.capacity.wait() // before the round: a slot freed during it counts
		work := proto.Clone(p.record).(*fleetv1.Session)
		work.MigratingFrom = nil
		placed, err := m.placeWith(ctx, work, p, maps.Clone(refused))
		switch {
		case err == nil:
			if placed.GetState() == fleetv1.SessionState_SESSION_STATE_READY {
				m.opts.Metrics.replacement("ready", sess.GetLostAt())
				m.log.Info("session re-placed", "session", id, "from", placed.GetMovedFrom(), "to", placed.GetWorkerId(),
					"reason", reason, "rounds", round)
				if err := m.replay(ctx, placed); err != nil {
					m.log.Warn("replay speech of a moved session", "session", id, "err", err)
				}
			}
			return placed, nil
		case errors.Is(err, ErrMovedOn):
			return p.current(ctx), err
		case ctx.Err() != nil:
			return nil, fmt.Errorf("re-place session %s: %w", id, ctx.Err())
		case !errors.Is(err, ErrNoCapacity) && !errors.Is(err, ErrUnknownAvatar) && !errors.Is(err, ErrUnknownVoice):
			// etcd or a worker failed in a way placement cannot route
			// around now: wait and try again, within the same deadline.
			m.log.Warn("re-place session", "session", id, "round", round, "err", err)
		}
		// Still ours? A session deleted while it waits stops waiting.
		if cur, rev, err := m.d.store.Session(ctx, id); errors.Is(err, fleetstore.ErrNotFound) || err == nil && rev != p.rev {
			return cur, fmt.Errorf("re-place session %s: %w", id, ErrMovedOn)
		}
		wait := min(bo.NextBackOff(), time.Until(deadline))
		if wait <= 0 {
			return m.failReplace(ctx, p, deadline)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("re-place session %s: %w", id, ctx.Err())
		case <-woken:
			// A slot freed: try now, and soon again if the fleet cache
			// has not seen it yet.
			t.Stop()
			bo.Reset()
		case <-t.C:
		}
	}
}

// CapacityChanged wakes re-placements waiting for a slot (the supervisor
// calls it when a slot key goes).
func (m *Manager) CapacityChanged() { m.capacity.notify() }

// broadcast wakes every goroutine waiting on it, once per notify.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// beingReplaced reports whether a record is in a re-placement's hands.
func beingReplaced(sess *fleetv1.Session) bool {
	switch sess.GetState() {
	case fleetv1.SessionState_SESSION_STATE_PLACING:
		return true
	case fleetv1.SessionState_SESSION_STATE_STARTING:
		return sess.GetLostAt() != nil
	}
	return false
}

// replaceDeadline is when a lost session stops waiting for a slot.
func (m *Manager) replaceDeadline(sess *fleetv1.Session) time.Time {
	lostAt := time.Now()
	if sess.GetLostAt() != nil {
		lostAt = sess.GetLostAt().AsTime()
	}
	timeout := m.opts.ReplaceTimeout
	if v := sess.GetReplaceTimeoutSeconds(); v > 0 {
		timeout = time.Duration(v) * time.Second
	}
	deadline := lostAt.Add(timeout)
	if v := sess.GetMaxDurationSeconds(); v > 0 && sess.GetCreatedAt() != nil {
		deadline = minTime(deadline, sess.GetCreatedAt().AsTime().Add(time.Duration(v)*time.Second))
	}
	return deadline
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// failReplace ends a session no worker could take in time.
func (m *Manager) failReplace(ctx context.Context, p *movePlacer, deadline time.Time) (*fleetv1.Session, error) {
	lost := "unknown"
	if p.record.GetLostAt() != nil {
		lost = time.Since(p.record.GetLostAt().AsTime()).Round(time.Millisecond).String()
	}
	msg := fmt.Sprintf("worker %s was lost and no worker could take the session by %s (%s after the loss)",
		p.record.GetMovedFrom(), deadline.UTC().Format(time.RFC3339), lost)
	ended, err := m.d.store.EndSessionAt(ctx, p.record, p.rev, fleetv1.SessionState_SESSION_STATE_FAILED,
		fleetv1.EndReason_END_REASON_WORKER_LOST, msg)
	if errors.Is(err, fleetstore.ErrConflict) {
		return p.current(ctx), fmt.Errorf("fail session %s: %w", p.record.GetId(), ErrMovedOn)
	}
	if err != nil {
		return nil, err
	}
	m.opts.Metrics.ended.WithLabelValues("worker_lost").Inc()
	m.opts.Metrics.replacement("failed", p.record.GetLostAt())
	m.log.Warn("session failed: no capacity to re-place it", "session", ended.GetId(), "lost_worker", ended.GetMovedFrom())
	return ended, nil
}

// movePlacer places an existing session anew. It follows the record's
// revision through its steps (placing → starting → back to placing when a
// worker refuses), so each step is guarded by the revision of the last.
type movePlacer struct {
	m       *Manager
	record  *fleetv1.Session // the record as it is at rev
	rev     int64
	reason  string
	release []*fleetv1.SlotRef // slots the record held before, freed by the first reservation
}

func (p *movePlacer) reserve(ctx context.Context, view registry.WorkerView, gpu, slot uint32, sess *fleetv1.Session) (int64, bool, error) {
	rev, ok, err := p.m.d.store.ReserveMove(ctx, fleetstore.Reservation{
		Worker: view.Worker.GetId(), WorkerLease: view.Lease, WorkerRevision: view.Revision, GPU: gpu, Slot: slot,
	}, sess, p.rev, p.release...)
	if err != nil {
		return 0, false, fmt.Errorf("re-place session %s: %w", sess.GetId(), err)
	}
	if ok {
		p.record, p.rev, p.release = proto.Clone(sess).(*fleetv1.Session), rev, nil
		return rev, true, nil
	}
	// Lost a race for the slot, or the record itself moved on?
	_, cur, err := p.m.d.store.Session(ctx, sess.GetId())
	if err != nil {
		return 0, false, fmt.Errorf("re-place session %s: %w", sess.GetId(), err)
	}
	if cur != p.rev {
		return 0, false, fmt.Errorf("re-place session %s: %w", sess.GetId(), ErrMovedOn)
	}
	return rev, false, nil
}

func (p *movePlacer) undo(ctx context.Context, sess *fleetv1.Session, rev int64) error {
	back := proto.Clone(sess).(*fleetv1.Session)
	back.State = fleetv1.SessionState_SESSION_STATE_PLACING
	newRev, err := p.m.d.store.Unplace(ctx, back, rev, fleetstore.SlotOf(sess))
	if errors.Is(err, fleetstore.ErrConflict) {
		return fmt.Errorf("%w: %w", ErrMovedOn, err)
	}
	if err != nil {
		return err
	}
	p.record, p.rev = back, newRev
	return nil
}

func (p *movePlacer) ready(sess *fleetv1.Session) *fleetv1.Session {
	ready := proto.Clone(sess).(*fleetv1.Session)
	ready.State = fleetv1.SessionState_SESSION_STATE_READY
	ready.Moves++
	ready.PlacedAt = timestamppb.Now()
	ready.LostAt = nil
	if p.reason != "" {
		ready.MoveReason = p.reason
	}
	return ready
}

// startRecord gives the new worker what is left of the session's max
// duration: a worker counts it from its own start, and a move must not
// lengthen a session's life.
func (p *movePlacer) startRecord(sess *fleetv1.Session) *fleetv1.Session {
	limit := sess.GetMaxDurationSeconds()
	if limit == 0 || sess.GetCreatedAt() == nil {
		return sess
	}
	left := time.Until(sess.GetCreatedAt().AsTime().Add(time.Duration(limit) * time.Second))
	out := proto.Clone(sess).(*fleetv1.Session)
	out.MaxDurationSeconds = uint32(max(1, (left+time.Second-1)/time.Second))
	return out
}

// observe does nothing: a re-placement's rounds are not creates (Replace
// records its outcome as a whole).
func (p *movePlacer) observe(string, time.Time) {}

// markLater is false: a re-placement replays speech and reports the moved
// record once it is ready, so it waits for its ready mark.
func (p *movePlacer) markLater() bool { return false }

// current reads the record as it is now, for a caller told ErrMovedOn;
// nil when it cannot be read.
func (p *movePlacer) current(ctx context.Context) *fleetv1.Session {
	sess, _, err := p.m.d.store.Session(ctx, p.record.GetId())
	if err != nil {
		return nil
	}
	return sess
}
