package kubescale

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// down drains the workers that go, waits until they are empty, then
// scales. ctx is the caller's, wctx the one bounded by the timeout.
func (s *scaler) down(ctx, wctx context.Context) error {
	p := s.plan
	s.printf("statefulset %s: scaling down from %d to %d replicas\n", s.name(), p.From, p.To)
	if p.Moving > p.Room {
		s.printf("warning: the workers that stay have %d free slots for %d sessions: the rest must end on their own\n", p.Room, p.Moving)
	}
	if len(p.Unregistered) > 0 {
		s.printf("pods %s have no worker in the fleet: nothing to drain there\n", strings.Join(p.Unregistered, ", "))
	}
	for _, id := range p.Drain {
		if _, err := s.o.Fleet.DrainWorkerMigrate(wctx, id); err != nil {
			if apiclient.HasCode(err, apiv1.CodeNotFound) {
				continue // it left the fleet since the listing: nothing to drain
			}
			return s.giveUp(ctx, wctx, nil, err)
		}
		s.printf("worker %s: draining, its sessions migrate to the workers that stay\n", id)
	}
	left, err := s.waitEmpty(wctx)
	if err != nil {
		return s.giveUp(ctx, wctx, left, err)
	}
	// The workers are empty: the write gets its own bound, so a timeout
	// that passes just now cannot leave it half-known.
	sctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := s.o.Target.SetReplicas(sctx, p.From, p.To); err != nil {
		return s.giveUp(ctx, ctx, nil, err) // an error of the write, never a timeout of the drain
	}
	s.printf("statefulset %s: scaled from %d to %d replicas\n", s.name(), p.From, p.To)
	return nil
}

// waitEmpty polls the fleet until no worker of the plan's Drain holds a
// session, printing each count as it changes. It returns the last counts.
func (s *scaler) waitEmpty(ctx context.Context) (map[string]int, error) {
	left := make(map[string]int, len(s.plan.Drain))
	for _, id := range s.plan.Drain {
		left[id] = -1
	}
	// A replica's registry may list a worker active for a moment after
	// the drain: only active after draining means someone undrained it.
	sawDraining := map[string]bool{}
	lastWarn := ""
	for {
		workers, err := s.o.Fleet.ListWorkers(ctx)
		switch {
		case err == nil:
			lastWarn = ""
			byID := make(map[string]apiv1.Worker, len(workers))
			for _, w := range workers {
				byID[w.ID] = w
			}
			empty := true
			for _, id := range s.plan.Drain {
				w, ok := byID[id]
				sawDraining[id] = sawDraining[id] || (ok && w.State == apiv1.WorkerDraining)
				if ok && w.State == apiv1.WorkerActive && sawDraining[id] {
					return left, fmt.Errorf("worker %s was undrained while it was being emptied (%s left)", id, sessions(w.Sessions))
				}
				n := w.Sessions // 0 for a worker that left the fleet
				if ok && w.State == apiv1.WorkerActive {
					empty = false // not yet seen draining: a session may still land
				}
				if n != left[id] {
					left[id] = n
					if ok {
						s.printf("worker %s: %s left\n", id, sessions(n))
					} else {
						s.printf("worker %s: no longer in the fleet\n", id)
					}
				}
				empty = empty && n == 0
			}
			if empty {
				return left, nil
			}
		case ctx.Err() != nil:
			return left, ctx.Err()
		case transient(err):
			if msg := err.Error(); msg != lastWarn {
				lastWarn = msg
				s.printf("warning: %s (still waiting)\n", msg)
			}
		default:
			return left, err
		}
		select {
		case <-ctx.Done():
			return left, ctx.Err()
		case <-time.After(s.o.PollInterval):
		}
	}
}

// giveUp ends a scale-down that will not scale: it undrains the workers
// that were active before (unless KeepDrained) and returns the error, a
// *TimeoutError when the timeout passed.
func (s *scaler) giveUp(ctx, wctx context.Context, left map[string]int, cause error) error {
	var undrained, kept []string
	var restoreErr error
	if s.o.KeepDrained {
		kept = s.plan.Drain
		if len(kept) > 0 {
			s.printf("left draining: %s\n", strings.Join(kept, ", "))
		}
	} else {
		undrained, restoreErr = s.restore(ctx)
		for _, id := range s.plan.Drain {
			if !holds(undrained, id) {
				kept = append(kept, id)
			}
		}
	}
	if ctx.Err() == nil && wctx.Err() != nil {
		holding := map[string]int{}
		for id, n := range left {
			if n != 0 {
				holding[id] = n // -1: never listed before the timeout
			}
		}
		return errors.Join(&TimeoutError{Workload: s.w, To: s.plan.To, Timeout: s.o.Timeout,
			Holding: holding, Undrained: undrained, Kept: kept}, restoreErr)
	}
	if ctx.Err() != nil {
		cause = fmt.Errorf("scale %s: %w", s.name(), ctx.Err())
	}
	return errors.Join(cause, restoreErr)
}

// restore undrains the plan's Restore workers, on a context of its own:
// the caller's may have ended.
func (s *scaler) restore(ctx context.Context) ([]string, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	var done []string
	var errs []error
	for _, id := range s.plan.Restore {
		if _, err := s.o.Fleet.UndrainWorker(rctx, id); err != nil && !apiclient.HasCode(err, apiv1.CodeNotFound) {
			errs = append(errs, fmt.Errorf("undrain %s again: %w", id, err))
			continue
		}
		done = append(done, id)
		s.printf("worker %s: undrained again\n", id)
	}
	return done, errors.Join(errs...)
}
