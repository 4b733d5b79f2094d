package kubescale

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// up scales, then waits until every new worker is registered and active.
func (s *scaler) up(ctx, wctx context.Context) error {
	p := s.plan
	if err := s.o.Target.SetReplicas(wctx, p.From, p.To); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("scale %s: %w", s.name(), ctx.Err())
		}
		return err
	}
	s.printf("statefulset %s: scaled from %d to %d replicas; waiting for %s\n", s.name(), p.From, p.To, strings.Join(p.Await, ", "))
	waiting, err := s.waitActive(wctx)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && wctx.Err() != nil {
		return &TimeoutError{Workload: s.w, To: p.To, Timeout: s.o.Timeout, Scaled: true, Waiting: waiting}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("scale %s: %w", s.name(), ctx.Err())
	}
	return err
}

// waitActive polls the fleet until every worker of the plan's Await is
// registered and active, printing each one's status as it changes, and
// undrains those that register draining. It returns those not active yet.
func (s *scaler) waitActive(ctx context.Context) ([]string, error) {
	status := map[string]string{}
	gone := map[string]bool{} // a stale registration has left
	for _, id := range s.plan.Await {
		gone[id] = !holds(s.plan.Stale, id)
	}
	lastWarn := ""
	for {
		workers, err := s.o.Fleet.ListWorkers(ctx)
		var waiting []string
		switch {
		case err == nil:
			lastWarn = ""
			byID := make(map[string]apiv1.Worker, len(workers))
			for _, w := range workers {
				byID[w.ID] = w
			}
			for _, id := range s.plan.Await {
				st, err := s.step(ctx, id, byID, gone)
				if err != nil {
					return s.notActive(status), err
				}
				if st != status[id] {
					status[id] = st
					s.printf("worker %s: %s\n", id, st)
				}
				if st != statusActive {
					waiting = append(waiting, id)
				}
			}
			if len(waiting) == 0 {
				return nil, nil
			}
		case ctx.Err() != nil:
			return s.notActive(status), ctx.Err()
		case transient(err):
			if msg := err.Error(); msg != lastWarn {
				lastWarn = msg
				s.printf("warning: %s (still waiting)\n", msg)
			}
		default:
			return s.notActive(status), err
		}
		select {
		case <-ctx.Done():
			return s.notActive(status), ctx.Err()
		case <-time.After(s.o.PollInterval):
		}
	}
}

// Statuses of a worker a scale-up waits for.
const (
	statusActive   = "registered and active"
	statusWaiting  = "waiting for its pod to register"
	statusLeaving  = "the previous pod's worker is still leaving the fleet"
	statusUndrain  = "registered draining (a drain mark from an earlier scale-down): undraining"
	statusInactive = "registered, state "
)

// step looks at one awaited worker, undraining it when it registered
// draining, and returns its status.
func (s *scaler) step(ctx context.Context, id string, byID map[string]apiv1.Worker, gone map[string]bool) (string, error) {
	w, ok := byID[id]
	if !gone[id] {
		if ok {
			return statusLeaving, nil
		}
		gone[id] = true
	}
	switch {
	case !ok:
		return statusWaiting, nil
	case w.State == apiv1.WorkerActive:
		return statusActive, nil
	case w.State == apiv1.WorkerDraining:
		if _, err := s.o.Fleet.UndrainWorker(ctx, id); err != nil && !transient(err) && !apiclient.HasCode(err, apiv1.CodeNotFound) {
			return "", fmt.Errorf("undrain new worker %s: %w", id, err)
		}
		return statusUndrain, nil
	}
	return statusInactive + w.State, nil
}

// notActive lists the awaited workers whose last status is not active.
func (s *scaler) notActive(status map[string]string) []string {
	var out []string
	for _, id := range s.plan.Await {
		if status[id] != statusActive {
			out = append(out, id)
		}
	}
	return out
}
