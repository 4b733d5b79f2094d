package kubescale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// Defaults of Options.
const (
	DefaultPollInterval = 500 * time.Millisecond
	restoreTimeout      = 30 * time.Second
)

// ErrTimeout is a scale that ran out of time: errors.Is(err, ErrTimeout)
// holds for a *TimeoutError.
var ErrTimeout = errors.New("scale timed out")

// Fleet is the fleet's side of scaling; *apiclient.Client implements it.
type Fleet interface {
	ListWorkers(ctx context.Context) ([]apiv1.Worker, error)
	DrainWorkerMigrate(ctx context.Context, id string) (*apiv1.Worker, error)
	UndrainWorker(ctx context.Context, id string) (*apiv1.Worker, error)
}

// Options configure one Scale.
type Options struct {
	Target Target
	Fleet  Fleet
	// Replicas is the replica count wanted.
	Replicas int32
	// Timeout bounds the whole change: the drain and the scale of a
	// scale-down, the scale and the registrations of a scale-up.
	Timeout time.Duration
	// PollInterval is how often the fleet is listed (0: DefaultPollInterval).
	PollInterval time.Duration
	// KeepDrained leaves the workers a failed scale-down drained; by
	// default those that were active before are undrained again.
	KeepDrained bool
	// Progress receives one line per change (nil discards).
	Progress io.Writer
}

// Validate checks the options.
func (o Options) Validate() error {
	switch {
	case o.Target == nil || o.Fleet == nil:
		return fmt.Errorf("%w: no target or no fleet", ErrInvalid)
	case o.Replicas < 0 || o.Replicas > MaxReplicas:
		return fmt.Errorf("%w: replicas %d is outside 0..%d", ErrInvalid, o.Replicas, MaxReplicas)
	case o.Timeout <= 0:
		return fmt.Errorf("%w: the timeout must be positive, got %s", ErrInvalid, o.Timeout)
	case o.PollInterval < 0:
		return fmt.Errorf("%w: the poll interval must not be negative, got %s", ErrInvalid, o.PollInterval)
	}
	return nil
}

// Result is what a Scale did.
type Result struct {
	Namespace   string `json:"namespace"`
	StatefulSet string `json:"statefulset"`
	From        int32  `json:"from"`
	To          int32  `json:"to"`
	// Drained are the workers emptied before a scale-down.
	Drained []string `json:"drained,omitempty"`
	// Added are the workers a scale-up waited for.
	Added []string `json:"added,omitempty"`
}

// TimeoutError is a scale that ran out of time.
type TimeoutError struct {
	Workload Workload
	To       int32
	Timeout  time.Duration
	// Scaled says whether the replica count was changed (a scale-up
	// changes it before it waits; a scale-down never changes it then).
	Scaled bool
	// Holding are the workers a scale-down was draining that still held
	// sessions, with their counts.
	Holding map[string]int
	// Waiting are the workers a scale-up was waiting for.
	Waiting []string
	// Undrained are the workers drained for the scale-down and undrained
	// again; Kept those left drained.
	Undrained, Kept []string
}

func (e *TimeoutError) Error() string {
	name := e.Workload.Namespace + "/" + e.Workload.Name
	if !e.Scaled {
		held := make([]string, 0, len(e.Holding))
		for id, n := range e.Holding {
			held = append(held, fmt.Sprintf("%s (%s)", id, sessions(n)))
		}
		sort.Strings(held)
		msg := fmt.Sprintf("statefulset %s not scaled: after %s workers still hold sessions: %s; replicas stay %d",
			name, e.Timeout, strings.Join(held, ", "), e.Workload.Replicas)
		if len(e.Undrained) > 0 {
			msg += "; undrained again: " + strings.Join(e.Undrained, ", ")
		}
		if len(e.Kept) > 0 {
			msg += "; left draining: " + strings.Join(e.Kept, ", ")
		}
		return msg
	}
	return fmt.Sprintf("statefulset %s scaled to %d, but after %s these workers are not active in the fleet: %s",
		name, e.To, e.Timeout, strings.Join(e.Waiting, ", "))
}

// Is makes errors.Is(err, ErrTimeout) hold.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// scaler is one Scale in progress.
type scaler struct {
	o    Options
	w    Workload
	plan Plan
}

// Scale changes the worker StatefulSet's replicas to o.Replicas. Going
// down, it first drains with migration the workers whose pods go, waits
// until they hold no session and only then changes the scale; when the
// timeout passes first it returns a *TimeoutError and leaves the replicas
// as they were. Going up, it changes the scale and then waits until every
// new worker has registered and is active, undraining one that registers
// with a drain mark an earlier scale-down left.
func Scale(ctx context.Context, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	w, err := o.Target.Workload(wctx)
	if err != nil {
		return Result{}, err
	}
	workers, err := o.Fleet.ListWorkers(wctx)
	if err != nil {
		return Result{}, err
	}
	plan, err := NewPlan(w, o.Replicas, workers)
	if err != nil {
		return Result{}, err
	}
	s := &scaler{o: o, w: w, plan: plan}
	res := Result{Namespace: w.Namespace, StatefulSet: w.Name, From: plan.From, To: plan.To}
	if len(plan.Draining) > 0 {
		s.printf("warning: workers %s are draining and take no new sessions (avatarctl workers undrain ID)\n",
			strings.Join(plan.Draining, ", "))
	}
	switch {
	case plan.To < plan.From:
		res.Drained = plan.Drain
		return res, s.down(ctx, wctx)
	case plan.To > plan.From:
		res.Added = plan.Await
		return res, s.up(ctx, wctx)
	}
	s.printf("statefulset %s already has %d replicas: nothing to do\n", s.name(), plan.From)
	return res, nil
}

func (s *scaler) name() string { return s.w.Namespace + "/" + s.w.Name }

func (s *scaler) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(s.o.Progress, format, args...)
}

// down drains the workers that go, waits until they are empty, then
// scales. ctx is the caller's, wctx the one bounded by the timeout.
func (s *scaler) down(ctx, wctx context.Context) error {
	p := s.plan
	s.printf("statefulset %s: scaling down from %d to %d replicas\n", s.name(), p.From, p.To)
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
	if err := s.o.Target.SetReplicas(wctx, p.From, p.To); err != nil {
		return s.giveUp(ctx, wctx, nil, err)
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

// transient reports whether a fleet error is worth another poll: a failed
// exchange or a 5xx/429 answer.
func transient(err error) bool {
	var ae *apiclient.APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.Status == http.StatusTooManyRequests
	}
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// sessions is "1 session" or "N sessions".
func sessions(n int) string {
	if n == 1 {
		return "1 session"
	}
	if n < 0 {
		return "unknown sessions"
	}
	return fmt.Sprintf("%d sessions", n)
}
