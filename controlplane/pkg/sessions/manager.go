// Package sessions is the control plane's session lifecycle: placing a new
// session (rank candidates, reserve a slot in one etcd transaction, start it
// on the worker over gRPC), re-placing one whose worker was lost by the same
// steps, reading, ending, and forwarding speech to the worker that hosts it.
// It keeps no state of its own: every fact is in etcd, so any replica can
// answer for any session.
package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/placement"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/workerclient"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Errors a caller maps to API errors.
var (
	ErrNoCapacity          = errors.New("no free slot on any eligible worker")
	ErrUnknownAvatar       = errors.New("no worker serves this avatar")
	ErrUnknownVoice        = errors.New("no worker serves this voice")
	ErrNotFound            = errors.New("session not found")
	ErrNotReady            = errors.New("session is not ready")
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")
	ErrInvalidInput        = errors.New("invalid input")
	ErrUnavailable         = errors.New("worker unavailable")
	// ErrRoomJoin: the worker could not join the session's LiveKit room
	// (the server refused the token or could not be reached); no other
	// worker is tried.
	ErrRoomJoin = errors.New("the session's LiveKit room could not be joined")
	// ErrQuotaExceeded: the owner holds its limit of live sessions.
	ErrQuotaExceeded = errors.New("live-session quota exceeded")
)

// Options configures a Manager.
type Options struct {
	Store    *fleetstore.Store
	Registry *registry.Registry
	Workers  *workerclient.Pool
	Selector placement.Selector
	Log      *slog.Logger
	Metrics  *Metrics
	// StartTimeout bounds one StartSession call to a worker.
	StartTimeout time.Duration
	// CallTimeout bounds other calls to workers (stop, speak, …).
	CallTimeout time.Duration
	// SignalingTimeout bounds a WHEP/WHIP offer to a worker: its SFU
	// answers once ICE gathering completes, STUN/TURN round trips included.
	SignalingTimeout time.Duration
	// IdempotencyTTL is how long an Idempotency-Key stays bound.
	IdempotencyTTL time.Duration
	// ReplaceTimeout is how long a session whose worker was lost waits for
	// a new slot when its record names no replace timeout (default 60 s).
	ReplaceTimeout time.Duration
	// ReplaceMinBackoff and ReplaceMaxBackoff bound the jittered
	// exponential wait between re-placement rounds that found no capacity
	// (defaults 250 ms and 5 s).
	ReplaceMinBackoff, ReplaceMaxBackoff time.Duration
	// ReadySettle bounds how long Get waits for a create's ready mark to
	// land before it shows the record as starting (default 1 s).
	ReadySettle time.Duration
	// TestHookMarkDelay, a test hook, holds every group commit holding a
	// create's ready mark back that long, so a test can kill a replica
	// between its 201s and their marks. Never set outside tests.
	TestHookMarkDelay time.Duration
}

// Manager runs the session lifecycle.
type Manager struct {
	opts Options
	log  *slog.Logger
	d    deps
	// replay is m.replaySpeech; unit tests replace it, since their fakes
	// do not stand in for the speech queue's store.
	replay func(ctx context.Context, sess *fleetv1.Session) error
	// capacity wakes re-placements waiting for a slot.
	capacity broadcast

	writer *batchWriter

	rngMu sync.Mutex
	rng   *mrand.Rand
}

// NewManager returns a Manager.
func NewManager(opts Options) *Manager {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.SignalingTimeout == 0 {
		opts.SignalingTimeout = 10 * time.Second
	}
	if opts.IdempotencyTTL == 0 {
		opts.IdempotencyTTL = 24 * time.Hour
	}
	if opts.ReplaceTimeout == 0 {
		opts.ReplaceTimeout = DefaultReplaceTimeout
	}
	if opts.ReplaceMinBackoff == 0 {
		opts.ReplaceMinBackoff = 250 * time.Millisecond
	}
	if opts.ReplaceMaxBackoff == 0 {
		opts.ReplaceMaxBackoff = 5 * time.Second
	}
	if opts.ReadySettle == 0 {
		opts.ReadySettle = time.Second
	}
	if opts.Selector == nil {
		opts.Selector = placement.Spread{}
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	writer := newBatchWriter(opts.Store, log)
	writer.testHookMarkDelay = opts.TestHookMarkDelay
	m := &Manager{opts: opts, log: log, writer: writer, rng: mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))}
	m.d = deps{store: opts.Store, fleet: opts.Registry, workers: opts.Workers, writer: m.writer}
	m.replay = m.replaySpeech
	return m
}

// newManager returns a Manager over the given dependencies (unit tests:
// in-memory fakes instead of etcd, the registry and workers).
func newManager(opts Options, d deps) *Manager {
	m := NewManager(opts)
	m.d = d
	m.replay = func(context.Context, *fleetv1.Session) error { return nil }
	return m
}

// Run runs the manager's background writer until ctx ends; creates need it.
func (m *Manager) Run(ctx context.Context) error {
	return m.writer.Run(ctx)
}

// CreateParams is a validated create request.
type CreateParams struct {
	Owner              string
	Avatar, Voice      string
	Labels             map[string]string
	IdleTimeoutSeconds uint32
	MaxDurationSeconds uint32
	// RestartPolicy and ReplaceTimeoutSeconds say what happens when the
	// session's worker is lost (Session.restart_policy, replace_timeout).
	RestartPolicy         fleetv1.RestartPolicy
	ReplaceTimeoutSeconds uint32
	// LiveKit, when set, is the LiveKit room the session joins as a voice
	// agent's avatar (kept in the record, in etcd, token included).
	LiveKit *fleetv1.LiveKitRoom
	// IdempotencyKey, when set, makes retries return the same session;
	// RequestHash tells a retry from a different request with the same key.
	IdempotencyKey string
	RequestHash    string
	// MaxSessions, when > 0, is the most live sessions Owner may hold
	// across the fleet; the reservation transaction enforces it.
	MaxSessions int
}

// NewSessionID returns a fresh, unguessable session id.
func NewSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "sess_" + hex.EncodeToString(b[:])
}

// Create places a new session and starts it; it returns the session once the
// worker has acknowledged it.
func (m *Manager) Create(ctx context.Context, p CreateParams) (*fleetv1.Session, error) {
	if p.IdempotencyKey == "" {
		return m.place(ctx, m.newSession(NewSessionID(), p), p.MaxSessions)
	}
	return m.createIdempotent(ctx, p)
}

func (m *Manager) newSession(id string, p CreateParams) *fleetv1.Session {
	return &fleetv1.Session{
		Id:                    id,
		Avatar:                p.Avatar,
		Voice:                 p.Voice,
		Labels:                p.Labels,
		State:                 fleetv1.SessionState_SESSION_STATE_STARTING,
		IdleTimeoutSeconds:    p.IdleTimeoutSeconds,
		MaxDurationSeconds:    p.MaxDurationSeconds,
		CreatedAt:             timestamppb.Now(),
		Owner:                 p.Owner,
		RestartPolicy:         p.RestartPolicy,
		ReplaceTimeoutSeconds: p.ReplaceTimeoutSeconds,
		Livekit:               p.LiveKit,
	}
}

// place reserves a slot for a new session and starts it there.
func (m *Manager) place(ctx context.Context, sess *fleetv1.Session, maxSessions int) (*fleetv1.Session, error) {
	return m.placeWith(ctx, sess, &createPlacer{m: m, maxSessions: maxSessions}, nil)
}

// placer is one kind of placement, the only difference between a create
// and a re-placement: how a slot is taken and given back, and what record
// a started session gets. Candidates, ranking, slot choice, retries and the
// start on the worker are shared (placeWith).
type placer interface {
	// reserve takes the slot and writes the record in state starting, in
	// one transaction; ok is false when the transaction lost a race.
	reserve(ctx context.Context, view registry.WorkerView, gpu, slot uint32, sess *fleetv1.Session) (rev int64, ok bool, err error)
	// undo gives the slot back after the worker refused the start.
	undo(ctx context.Context, sess *fleetv1.Session, rev int64) error
	// ready is the record of a session its worker runs.
	ready(sess *fleetv1.Session) *fleetv1.Session
	// startRecord is the record sent to the worker with StartSession.
	startRecord(sess *fleetv1.Session) *fleetv1.Session
	// markLater says whether the ready record is written off the critical
	// path (group-committed, not waited for): true for creates.
	markLater() bool
	// observe records the outcome of one placement round.
	observe(result string, start time.Time)
}

// placeWith ranks candidates, reserves a slot and starts the session there,
// trying further candidates when a reservation loses a race or a worker
// refuses (workers in refused, and those that refuse now, are skipped).
func (m *Manager) placeWith(ctx context.Context, sess *fleetv1.Session, p placer, refused map[string]bool) (*fleetv1.Session, error) {
	start := time.Now()
	tried := map[slotID]bool{}
	confirmed := false
	if refused == nil {
		refused = map[string]bool{}
	}
	for {
		views := m.d.fleet.Workers()
		cands, err := candidates(views, sess, refused)
		if err != nil {
			p.observe("rejected", start)
			return nil, err
		}
		attempted := false
		for _, c := range m.rank(cands) {
			view, ok := findView(views, c.WorkerID)
			if !ok {
				continue
			}
			slot, ok := m.freeSlot(c, tried)
			if !ok {
				continue
			}
			attempted = true
			tried[slotID{c.WorkerID, c.GPU, slot}] = true
			placed, err := m.tryReserveAndStart(ctx, view, c.GPU, slot, sess, p)
			if errors.Is(err, ErrQuotaExceeded) {
				p.observe("quota_exceeded", start)
				return nil, err
			}
			if err != nil {
				p.observe("error", start)
				return nil, err
			}
			switch placed {
			case reserveLost:
				m.opts.Metrics.conflicts.Inc()
				continue
			case workerRefused:
				refused[c.WorkerID] = true
				continue
			}
			p.observe("placed", start)
			return sess, nil
		}
		if !attempted {
			// The cache says full; it may lag behind other replicas'
			// releases. Ask etcd once before refusing.
			if !confirmed {
				confirmed = true
				if fresh, err := m.d.fleet.ConfirmSlots(ctx); err == nil && fresh {
					continue
				} else if err != nil {
					m.log.Debug("confirm slot use before no_capacity", "session", sess.GetId(), "err", err)
				}
			}
			p.observe("no_capacity", start)
			m.log.Debug("no free slot", "session", sess.GetId(), "candidates", candidateSummary(cands), "refused", len(refused), "tried", len(tried))
			return nil, ErrNoCapacity
		}
		if err := ctx.Err(); err != nil {
			p.observe("error", start)
			return nil, fmt.Errorf("place session %s: %w", sess.GetId(), err)
		}
	}
}

type slotID struct {
	worker    string
	gpu, slot uint32
}

type outcome int

const (
	placedOK outcome = iota
	reserveLost
	workerRefused
)

func (m *Manager) tryReserveAndStart(ctx context.Context, view registry.WorkerView, gpu, slot uint32, sess *fleetv1.Session, p placer) (outcome, error) {
	worker := view.Worker.GetId()
	sess.State = fleetv1.SessionState_SESSION_STATE_STARTING
	rev, ok, err := p.reserve(ctx, view, gpu, slot, sess)
	if err != nil {
		return 0, err
	}
	if !ok {
		return reserveLost, nil
	}
	m.d.fleet.NoteReserved(worker, registry.SlotRef{GPU: gpu, Slot: slot}, sess.GetId())

	if err := m.startOnWorker(ctx, view.Worker.GetId(), view.Worker.GetGrpcAddress(), p.startRecord(sess), rev); err != nil {
		m.log.Warn("worker refused session; trying elsewhere", "session", sess.GetId(), "worker", worker, "err", err)
		// Undo with a fresh context: the request's may be what failed.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.CallTimeout)
		defer cancel()
		if uerr := p.undo(uctx, sess, rev); uerr != nil {
			return 0, fmt.Errorf("undo reservation of %s on %s after %v: %w", sess.GetId(), worker, err, uerr)
		}
		m.d.fleet.NoteReleased(worker, registry.SlotRef{GPU: gpu, Slot: slot}, sess.GetId())
		if ctx.Err() != nil {
			return 0, fmt.Errorf("start session %s on %s: %w", sess.GetId(), worker, ctx.Err())
		}
		var se interface{ GRPCStatus() *status.Status }
		if errors.As(err, &se) && se.GRPCStatus().Code() == codes.Aborted {
			return 0, fmt.Errorf("%w: %s", ErrRoomJoin, se.GRPCStatus().Message())
		}
		return workerRefused, nil
	}

	ready := p.ready(sess)
	if p.markLater() {
		// The reservation is committed and the worker runs the session:
		// the create is done. The ready mark follows in a group commit; a
		// read waits for it (Get), the reaper recovers it if this replica
		// dies first, and it is dropped if the record moved on meanwhile.
		m.d.writer.Mark(ready, rev)
		proto.Reset(sess)
		proto.Merge(sess, ready)
		return placedOK, nil
	}
	if err := m.d.writer.Write(ctx, ready, rev); err != nil {
		if !errors.Is(err, fleetstore.ErrConflict) {
			return 0, err
		}
		// Ended (deleted, worker lost) between start and now: report it as is.
		cur, _, gerr := m.d.store.Session(ctx, sess.GetId())
		if gerr != nil {
			return 0, gerr
		}
		proto.Reset(sess)
		proto.Merge(sess, cur)
		return placedOK, nil
	}
	proto.Reset(sess)
	proto.Merge(sess, ready)
	return placedOK, nil
}

// createPlacer places a new session: the reservation writes a record that
// must not exist yet and counts the owner's quota.
type createPlacer struct {
	m           *Manager
	maxSessions int
}

func (p *createPlacer) reserve(ctx context.Context, view registry.WorkerView, gpu, slot uint32, sess *fleetv1.Session) (int64, bool, error) {
	rev, ok, err := p.m.d.store.Reserve(ctx, fleetstore.Reservation{
		Worker: view.Worker.GetId(), WorkerLease: view.Lease, WorkerRevision: view.Revision, GPU: gpu, Slot: slot,
		OwnerLimit: p.maxSessions,
	}, sess)
	if errors.Is(err, fleetstore.ErrQuotaExceeded) {
		return 0, false, fmt.Errorf("place session %s: %w (%d live sessions)", sess.GetId(), ErrQuotaExceeded, p.maxSessions)
	}
	if err != nil {
		return 0, false, fmt.Errorf("place session %s: %w", sess.GetId(), err)
	}
	return rev, ok, nil
}

func (p *createPlacer) undo(ctx context.Context, sess *fleetv1.Session, rev int64) error {
	return p.m.d.store.Unreserve(ctx, sess, rev)
}

func (p *createPlacer) ready(sess *fleetv1.Session) *fleetv1.Session {
	ready := proto.Clone(sess).(*fleetv1.Session)
	ready.State = fleetv1.SessionState_SESSION_STATE_READY
	ready.PlacedAt = timestamppb.Now()
	return ready
}

func (p *createPlacer) startRecord(sess *fleetv1.Session) *fleetv1.Session { return sess }

func (p *createPlacer) markLater() bool { return true }

func (p *createPlacer) observe(result string, start time.Time) {
	p.m.opts.Metrics.placement(result, start)
}

func (m *Manager) startOnWorker(ctx context.Context, workerID, addr string, sess *fleetv1.Session, reservedAt int64) error {
	cl, err := m.d.workers.Client(workerID, addr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.StartTimeout)
	defer cancel()
	if _, err := cl.StartSession(cctx, &fleetv1.StartSessionRequest{Session: sess, ReservationRevision: reservedAt}); err != nil {
		return fmt.Errorf("start session on %s: %w", addr, err)
	}
	return nil
}

func (m *Manager) rank(cands []placement.Candidate) []placement.Candidate {
	m.rngMu.Lock()
	defer m.rngMu.Unlock()
	return m.opts.Selector.Select(cands, m.rng)
}

// freeSlot picks a free slot on a GPU that this request has not tried yet,
// probing from a random index so that replicas racing with the same view
// mostly pick different slots and their transactions do not collide.
func (m *Manager) freeSlot(c placement.Candidate, tried map[slotID]bool) (uint32, bool) {
	if c.Slots <= 0 {
		return 0, false
	}
	m.rngMu.Lock()
	start := m.rng.IntN(c.Slots)
	m.rngMu.Unlock()
	return m.d.fleet.FreeSlot(c.WorkerID, c.GPU, c.Slots, start, func(s uint32) bool {
		return tried[slotID{c.WorkerID, c.GPU, s}]
	})
}

func findView(views []registry.WorkerView, id string) (registry.WorkerView, bool) {
	for _, v := range views {
		if v.Worker.GetId() == id {
			return v, true
		}
	}
	return registry.WorkerView{}, false
}

// grpcError maps a worker's gRPC error onto the package's errors.
func grpcError(op string, err error) error {
	switch status.Code(err) {
	case codes.InvalidArgument:
		return fmt.Errorf("%s: %w: %s", op, ErrInvalidInput, status.Convert(err).Message())
	case codes.NotFound, codes.FailedPrecondition:
		return fmt.Errorf("%s: %w: %s", op, ErrNotReady, status.Convert(err).Message())
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return fmt.Errorf("%s: %w: %v", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
