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
	writeTimeout        = 30 * time.Second
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
	// Timeout bounds the change: the drain of a scale-down (the scale
	// written once the workers are empty has a bound of its own), the
	// scale and the registrations of a scale-up.
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
