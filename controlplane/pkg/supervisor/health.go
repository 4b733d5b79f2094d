package supervisor

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// Failure detection. The worker's lease stays the source of truth: a worker
// is lost when its lease (and with it its record and every slot key) is
// gone. The leader does not wait for the lease's TTL, though: it probes
// every worker over NATS each HealthInterval (250 ms), and a worker that
// has not answered for SuspectAfter (1 s) and HealthFailures probes in a
// row is SUSPECT. The leader then confirms with a second, independent
// signal: a TCP connection to the worker's gRPC address. Refused or
// unanswered, the worker is dead and the leader FENCES it: it revokes the
// worker's lease, so its slot keys vanish at once and the reaper re-places
// its sessions. A suspect whose gRPC port still answers is alive but cut
// off from NATS: it is only marked down (placement skips it) and keeps its
// sessions. A zombie that was fenced while alive finds its lease gone at
// its next keep-alive and stops every session (worker/pkg/registration).
// The leader fences nobody when more than half of the fleet is suspect at
// once, or while its own NATS link is down: that is its own trouble, not
// theirs, and the leases decide.

// HealthChecker asks one worker whether it is alive.
type HealthChecker interface {
	Check(ctx context.Context, workerID string) error
}

// Confirmer gives the second signal about a suspect worker: nil when the
// worker is reachable by another path (alive), an error when not (dead).
type Confirmer interface {
	Reachable(ctx context.Context, w registry.WorkerView) error
}

// NATSHealth checks a worker with a request to its health subject.
type NATSHealth struct {
	Conn *nats.Conn
}

// Check implements HealthChecker.
func (h NATSHealth) Check(ctx context.Context, workerID string) error {
	if _, err := h.Conn.RequestWithContext(ctx, fleetbus.HealthSubject(workerID), nil); err != nil {
		return fmt.Errorf("health of %s: %w", workerID, err)
	}
	return nil
}

// Healthy reports whether the leader's own NATS link is up: probes that
// fail while it is down say nothing about the workers.
func (h NATSHealth) Healthy() bool { return h.Conn.IsConnected() }

// TCPConfirmer confirms a suspect by connecting to its gRPC address.
type TCPConfirmer struct {
	Timeout time.Duration // 0 means 500 ms
}

// Reachable implements Confirmer.
func (c TCPConfirmer) Reachable(ctx context.Context, w registry.WorkerView) error {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", w.Worker.GetGrpcAddress())
	if err != nil {
		return fmt.Errorf("connect to %s at %s: %w", w.Worker.GetId(), w.Worker.GetGrpcAddress(), err)
	}
	_ = conn.Close()
	return nil
}

// probeState is the leader's own view of one worker; a new leader starts
// afresh (everyone answered at its start).
type probeState struct {
	lease      int64
	lastAnswer time.Time
	failures   int
	lastErr    error
	fenced     bool
}

// healthLoop probes every registered worker each interval, marks workers
// that are unreachable but alive down (and up again), and fences dead ones.
func (s *Supervisor) healthLoop(ctx context.Context) error {
	if s.opts.Health == nil {
		<-ctx.Done()
		return nil
	}
	state := map[string]*probeState{}
	tick := time.NewTicker(s.opts.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		workers := s.opts.Registry.Workers()
		results := s.probe(ctx, workers)
		if ctx.Err() != nil {
			return nil
		}
		if h, ok := s.opts.Health.(interface{ Healthy() bool }); ok && !h.Healthy() {
			// Our own link is down: the probes say nothing, and the
			// silence they measure starts again once it is back.
			for _, st := range state {
				st.failures, st.lastAnswer = 0, time.Now()
			}
			continue
		}
		up, suspects := tally(state, workers, results, time.Now(), s.opts.HealthFailures, s.opts.SuspectAfter)
		for _, w := range up {
			s.markDown(ctx, w, false)
		}
		if len(suspects) > 0 {
			s.judge(ctx, suspects, len(workers), state, time.Now())
		}
	}
}

// tally folds one round of probe results (results[i] is workers[i]'s) into
// state and returns the workers marked down that answered again, and the
// suspects: workers not yet fenced that failed at least failures probes in
// a row and have been silent for at least suspectAfter. It does no I/O.
func tally(state map[string]*probeState, workers []registry.WorkerView, results []error, now time.Time,
	failures int, suspectAfter time.Duration) (up, suspects []registry.WorkerView) {
	seen := make(map[string]bool, len(workers))
	for i, w := range workers {
		id := w.Worker.GetId()
		seen[id] = true
		st := state[id]
		if st == nil || st.lease != int64(w.Lease) {
			// New, or registered again under a new lease: a fresh start.
			st = &probeState{lease: int64(w.Lease), lastAnswer: now}
			state[id] = st
		}
		if results[i] == nil {
			st.failures, st.lastAnswer, st.lastErr = 0, now, nil
			if w.Down {
				up = append(up, w)
			}
			continue
		}
		st.failures++
		st.lastErr = results[i]
		if !st.fenced && st.failures >= failures && now.Sub(st.lastAnswer) >= suspectAfter {
			suspects = append(suspects, w)
		}
	}
	for id := range state {
		if !seen[id] {
			delete(state, id)
		}
	}
	return up, suspects
}

// fenceAllowed says whether the leader may fence any of suspects in a fleet
// of that many workers: never with fencing off, and never when more than
// half the fleet (at least two workers) is suspect at once — then the
// trouble is more likely the leader's than theirs.
func fenceAllowed(suspects, fleet int, noFence bool) bool {
	return !noFence && !massSuspect(suspects, fleet)
}

// massSuspect says whether more than half a fleet (at least two workers)
// is suspect at once.
func massSuspect(suspects, fleet int) bool { return suspects > max(1, fleet/2) }

// probe checks the workers concurrently, each bounded by HealthTimeout.
func (s *Supervisor) probe(ctx context.Context, workers []registry.WorkerView) []error {
	results := make([]error, len(workers))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i, w := range workers {
		g.Go(func() error {
			cctx, cancel := context.WithTimeout(gctx, s.opts.HealthTimeout)
			defer cancel()
			results[i] = s.opts.Health.Check(cctx, w.Worker.GetId())
			return nil
		})
	}
	_ = g.Wait()
	return results
}

// judge confirms each suspect: a dead one is fenced, a live one marked down.
// When more than half the fleet is suspect at once, the trouble is more
// likely the leader's (starved of CPU, cut off from NATS) than theirs: it
// then neither fences nor marks any down, and the leases decide. Marking
// them all down took every worker out of placement at once: every create
// of the fleet answered 503 no_capacity while the leader's probes lagged.
func (s *Supervisor) judge(ctx context.Context, suspects []registry.WorkerView, fleet int, state map[string]*probeState, now time.Time) {
	if massSuspect(len(suspects), fleet) {
		s.log.Warn("too many workers suspect at once; fencing none and marking none down (the leases decide)", "suspects", len(suspects), "workers", fleet)
		return
	}
	canFence := fenceAllowed(len(suspects), fleet, s.opts.NoFence)
	for _, w := range suspects {
		id := w.Worker.GetId()
		st := state[id]
		err := s.opts.Confirm.Reachable(ctx, w)
		if err == nil || !canFence {
			if !w.Down {
				s.log.Warn("worker answers no health probes; marked down", "worker", id,
					"silent", now.Sub(st.lastAnswer).Round(time.Millisecond), "err", st.lastErr, "reachable", err == nil)
				s.markDown(ctx, w, true)
			}
			continue
		}
		s.log.Warn("worker dead; fencing it (revoking its lease)", "worker", id, "lease", fmt.Sprintf("%x", int64(w.Lease)),
			"silent", now.Sub(st.lastAnswer).Round(time.Millisecond), "probe", st.lastErr, "confirm", err)
		if err := s.opts.Store.RevokeLease(ctx, w.Lease); err != nil {
			s.log.Warn("fence worker", "worker", id, "err", err)
			continue
		}
		st.fenced = true
		if s.opts.OnFence != nil {
			s.opts.OnFence(id)
		}
	}
}

func (s *Supervisor) markDown(ctx context.Context, w registry.WorkerView, down bool) {
	id := w.Worker.GetId()
	if err := s.opts.Store.SetDown(ctx, id, w.Lease, down); err != nil {
		s.log.Warn("set worker health mark", "worker", id, "down", down, "err", err)
	}
}
