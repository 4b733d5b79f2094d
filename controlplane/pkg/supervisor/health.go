package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

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

// healthLoop checks every registered worker each interval. A worker that
// fails HealthFailures checks in a row is marked down (placement skips it);
// one that answers again is marked up.
func (s *Supervisor) healthLoop(ctx context.Context) error {
	if s.opts.Health == nil {
		<-ctx.Done()
		return nil
	}
	failures := map[string]int{} // the leader's own tally; a new leader starts afresh
	tick := time.NewTicker(s.opts.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		workers := s.opts.Registry.Workers()
		results := make([]error, len(workers))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(32)
		for i, w := range workers {
			g.Go(func() error {
				cctx, cancel := context.WithTimeout(gctx, s.opts.HealthTimeout)
				defer cancel()
				results[i] = s.opts.Health.Check(cctx, w.Worker.GetId())
				return nil
			})
		}
		_ = g.Wait()
		if ctx.Err() != nil {
			return nil
		}
		seen := map[string]bool{}
		for i, w := range workers {
			id := w.Worker.GetId()
			seen[id] = true
			if results[i] == nil {
				failures[id] = 0
				if w.Down {
					s.markDown(ctx, w, false)
				}
				continue
			}
			failures[id]++
			if failures[id] >= s.opts.HealthFailures && !w.Down {
				s.log.Warn("worker failed health checks", "worker", id, "failures", failures[id], "err", results[i])
				s.markDown(ctx, w, true)
			}
		}
		for id := range failures {
			if !seen[id] {
				delete(failures, id)
			}
		}
	}
}

func (s *Supervisor) markDown(ctx context.Context, w registry.WorkerView, down bool) {
	id := w.Worker.GetId()
	if err := s.opts.Store.SetDown(ctx, id, w.Lease, down); err != nil {
		s.log.Warn("set worker health mark", "worker", id, "down", down, "err", err)
		return
	}
	typ := fleetbus.WorkerUp
	if down {
		typ = fleetbus.WorkerDown
	}
	s.publish(ctx, fleetbus.WorkerEvent(typ, id, w.Worker))
}
