// Package registration keeps a worker's record in etcd under the worker's
// lease, the way etcd's concurrency.Session ties keys to a client's life:
// the lease is kept alive while the process runs, and everything written
// under it (the record, and the slot keys the control plane reserves on the
// worker) vanishes when the worker dies. A lost lease means those slots are
// gone, so the owner of the Registrar must stop every local session before
// the worker registers again under a new lease. The lease counts as lost a
// margin before etcd could expire it (fleetstore.LeaseSession), and when
// the control plane's leader revokes it to fence a worker it thinks dead:
// either way the worker stops serving before anyone else may take its
// slots.
package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// ErrIDInUse is returned when another live process holds the worker id.
var ErrIDInUse = errors.New("worker id in use by another lease")

// ErrDeregistered is returned by calls after Deregister or Abandon.
var ErrDeregistered = errors.New("worker deregistered")

// Config configures a Registrar.
type Config struct {
	Store *fleetstore.Store
	// Worker is the record to keep: id, addresses, GPUs, version. Its state
	// starts as ACTIVE.
	Worker *fleetv1.Worker
	// TTL is the lease TTL (whole seconds, at least 1s).
	TTL time.Duration
	// FenceMargin is how long before etcd could expire the lease (counted
	// from the last keep-alive answer) the worker counts it lost; 0 means
	// a fifth of TTL, at least 200 ms.
	FenceMargin time.Duration
	// IDWait bounds how long Register waits for a record of the same id
	// under another lease to expire (a previous run of this worker that
	// crashed); 0 means TTL + 2s. A record still there after that belongs
	// to a live duplicate: ErrIDInUse.
	IDWait time.Duration
	Logger *slog.Logger
}

// Registrar keeps one worker registered.
type Registrar struct {
	store  *fleetstore.Store
	ttl    int
	margin time.Duration
	idWait time.Duration
	log    *slog.Logger

	// life bounds the keep-alive of every lease this Registrar takes; it
	// ends only at Deregister or Abandon, never with a caller's context, so a
	// shutdown that drains first keeps the lease alive meanwhile.
	life       context.Context
	lifeCancel context.CancelFunc

	// ops serialises the operations that write the record (register, set
	// state); a channel so that waiting for it honours a context.
	ops chan struct{}

	// mu guards the fields below; it is never held across a network call,
	// so Done, Lease and Deregister answer while a registration is stuck.
	mu           sync.Mutex
	record       *fleetv1.Worker
	session      *fleetstore.LeaseSession
	deregistered bool
}

// New returns a Registrar; Register writes the record.
func New(cfg Config) (*Registrar, error) {
	if cfg.Store == nil || cfg.Worker == nil {
		return nil, errors.New("registration: store and worker record are required")
	}
	if !fleetstore.ValidName(cfg.Worker.GetId()) {
		return nil, fmt.Errorf("registration: invalid worker id %q", cfg.Worker.GetId())
	}
	if cfg.TTL < time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("registration: lease TTL %s must be whole seconds, at least 1s", cfg.TTL)
	}
	if cfg.IDWait == 0 {
		cfg.IDWait = cfg.TTL + 2*time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec := proto.CloneOf(cfg.Worker)
	rec.State = fleetv1.WorkerState_WORKER_STATE_ACTIVE
	life, cancel := context.WithCancel(context.Background())
	return &Registrar{
		store:      cfg.Store,
		ttl:        int(cfg.TTL / time.Second),
		margin:     cfg.FenceMargin,
		idWait:     cfg.IDWait,
		log:        log,
		life:       life,
		lifeCancel: cancel,
		ops:        make(chan struct{}, 1),
		record:     rec,
	}, nil
}

func (r *Registrar) acquire(ctx context.Context) error {
	select {
	case r.ops <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("registration: %w", ctx.Err())
	}
}

func (r *Registrar) release() { <-r.ops }

// Register takes a lease, keeps it alive, and writes the worker record under
// it. It waits (up to IDWait) for a record
// of the same id under another lease to disappear.
func (r *Registrar) Register(ctx context.Context) error {
	return r.register(ctx, clientv3.NoLease)
}

// register does Register; lost is the lease of a previous registration of
// this Registrar whose record may linger (ours to revoke).
func (r *Registrar) register(ctx context.Context, lost clientv3.LeaseID) error {
	if err := r.acquire(ctx); err != nil {
		return err
	}
	rec, err := r.registerLocked(ctx, lost)
	r.release()
	if err != nil {
		return err
	}
	r.log.Info("worker registered", "lease", fmt.Sprintf("%x", rec.lease), "state", rec.worker.GetState().String())
	return nil
}

type snapshot struct {
	worker *fleetv1.Worker
	lease  clientv3.LeaseID
}

func (r *Registrar) registerLocked(ctx context.Context, lost clientv3.LeaseID) (snapshot, error) {
	r.mu.Lock()
	prev, deregistered := r.session, r.deregistered
	r.mu.Unlock()
	if deregistered {
		return snapshot{}, ErrDeregistered
	}
	if prev != nil {
		select {
		case <-prev.Done():
		default:
			return snapshot{}, errors.New("registration: already registered")
		}
	}
	if err := r.waitForID(ctx, lost); err != nil {
		return snapshot{}, err
	}
	ttl := time.Duration(r.ttl) * time.Second
	grant, err := r.store.GrantLease(ctx, ttl)
	if err != nil {
		return snapshot{}, fmt.Errorf("registration: %w", err)
	}
	// The keep-alive lives on the Registrar's life context, not on ctx,
	// which only bounds this call.
	sess, err := r.store.KeepLease(r.life, grant, ttl, r.margin)
	if err != nil {
		r.revoke(ctx, grant)
		return snapshot{}, fmt.Errorf("registration: %w", err)
	}
	r.mu.Lock()
	if r.record.StartedAt == nil {
		r.record.StartedAt = timestamppb.Now()
	}
	rec := proto.CloneOf(r.record)
	r.mu.Unlock()
	if err := r.store.PutWorker(ctx, rec, sess.Lease()); err != nil {
		sess.Orphan()
		r.revoke(ctx, sess.Lease())
		return snapshot{}, fmt.Errorf("registration: %w", err)
	}
	r.mu.Lock()
	deregistered = r.deregistered
	if !deregistered {
		r.session = sess
	}
	r.mu.Unlock()
	if deregistered {
		// Deregister ran meanwhile: undo this registration.
		sess.Orphan()
		r.revoke(ctx, sess.Lease())
		return snapshot{}, ErrDeregistered
	}
	return snapshot{worker: rec, lease: sess.Lease()}, nil
}

// waitForID returns once no record of this worker id exists under a lease
// other than ours. A record under lost (our own dead registration) is
// removed by revoking that lease.
func (r *Registrar) waitForID(ctx context.Context, lost clientv3.LeaseID) error {
	key := r.store.Keys().Worker(r.record.GetId())
	deadline := time.Now().Add(r.idWait)
	warned := false
	for {
		holder, found, err := r.store.WorkerLease(ctx, r.record.GetId())
		if err != nil {
			return fmt.Errorf("registration: %w", err)
		}
		if !found {
			return nil
		}
		if lost != clientv3.NoLease && holder == lost {
			r.revoke(ctx, lost)
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registration: %s held by lease %x: %w", key, holder, ErrIDInUse)
		}
		if !warned {
			r.log.Warn("worker record exists under another lease; waiting for it to expire", "lease", fmt.Sprintf("%x", holder))
			warned = true
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("registration: wait for worker id: %w", ctx.Err())
		}
	}
}

func (r *Registrar) revoke(ctx context.Context, lease clientv3.LeaseID) {
	if err := r.store.RevokeLease(ctx, lease); err != nil {
		r.log.Warn("revoke lease failed; it expires on its own", "lease", fmt.Sprintf("%x", lease), "err", err)
	}
}

// Lease is the current lease (NoLease before Register).
func (r *Registrar) Lease() clientv3.LeaseID {
	s, _ := r.current()
	if s == nil {
		return clientv3.NoLease
	}
	return s.Lease()
}

// Done closes when the current lease is lost (expired, revoked, fenced for
// want of keep-alive answers, or no longer refreshed). It is nil before Register; after a re-registration it is the
// new lease's channel.
func (r *Registrar) Done() <-chan struct{} {
	s, _ := r.current()
	if s == nil {
		return nil
	}
	return s.Done()
}

func (r *Registrar) current() (*fleetstore.LeaseSession, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.session, r.deregistered
}

// Record is a copy of the record as last written (or to be written).
func (r *Registrar) Record() *fleetv1.Worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proto.CloneOf(r.record)
}

// SetMigrate sets Worker.migrate in the record, written with the next
// SetState: a draining worker asks the control plane to move its live
// sessions elsewhere.
func (r *Registrar) SetMigrate(migrate bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record.Migrate = migrate
}

// SetState changes the state in the worker record (DRAINING when the worker
// drains). The state is kept even when the write fails, so a
// re-registration carries it. (Events about it derive from etcd.)
func (r *Registrar) SetState(ctx context.Context, state fleetv1.WorkerState) error {
	if err := r.acquire(ctx); err != nil {
		return err
	}
	defer r.release()
	r.mu.Lock()
	if r.deregistered {
		r.mu.Unlock()
		return ErrDeregistered
	}
	prev := r.record.GetState()
	r.record.State = state
	rec, sess := proto.CloneOf(r.record), r.session
	r.mu.Unlock()
	if sess != nil {
		if err := r.store.PutWorker(ctx, rec, sess.Lease()); err != nil {
			return fmt.Errorf("registration: set state %s: %w", state, err)
		}
	}
	if prev != state {
		r.log.Info("worker state changed", "from", prev.String(), "to", state.String())
	}
	return nil
}

// KeepRegistered waits for the lease to be lost and registers again under a
// new lease, until ctx ends or the worker deregisters. onLost runs before
// the new registration: the slots of the old lease are gone, so it must stop
// every local session. Register must have succeeded first.
func (r *Registrar) KeepRegistered(ctx context.Context, onLost func(ctx context.Context, lost clientv3.LeaseID)) error {
	for {
		sess, deregistered := r.current()
		if deregistered {
			return nil
		}
		if sess == nil {
			return errors.New("registration: KeepRegistered before Register")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
		}
		if _, deregistered := r.current(); deregistered {
			return nil
		}
		r.log.Warn("worker lease lost; its slots are gone", "lease", fmt.Sprintf("%x", sess.Lease()), "cause", sess.Err())
		if onLost != nil {
			onLost(ctx, sess.Lease())
		}
		if err := r.reregister(ctx, sess.Lease()); err != nil {
			if errors.Is(err, ErrDeregistered) || ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// reregister retries registration with backoff; only a duplicate id stops it.
func (r *Registrar) reregister(ctx context.Context, lost clientv3.LeaseID) error {
	backoff := 100 * time.Millisecond
	maxBackoff := time.Duration(r.ttl) * time.Second
	for {
		err := r.register(ctx, lost)
		if err == nil || errors.Is(err, ErrDeregistered) || errors.Is(err, ErrIDInUse) || ctx.Err() != nil {
			return err
		}
		r.log.Warn("re-registration failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Deregister revokes the lease: the record and every slot under it vanish at
// once. Later calls do nothing.
func (r *Registrar) Deregister(ctx context.Context) error {
	sess, already := r.stop()
	if already {
		return nil
	}
	if sess == nil {
		return nil // never registered: nothing to revoke or announce
	}
	if err := sess.Close(ctx); err != nil {
		return fmt.Errorf("registration: %w", err)
	}
	r.log.Info("worker deregistered")
	return nil
}

// Abandon stops refreshing the lease without revoking it, as a crashed
// process would: the record and slots vanish when the lease expires. Tests
// of worker loss use it.
func (r *Registrar) Abandon() {
	if sess, _ := r.stop(); sess != nil {
		sess.Orphan()
	}
}

// stop marks the Registrar deregistered and ends every keep-alive it owns.
func (r *Registrar) stop() (sess *fleetstore.LeaseSession, already bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deregistered {
		return nil, true
	}
	r.deregistered = true
	r.lifeCancel()
	return r.session, false
}
