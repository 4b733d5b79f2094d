package kubescale

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// MaxReplicas bounds the replica count Scale accepts: one worker runs per
// GPU node, and no fleet has this many.
const MaxReplicas = 1000

// ErrInvalid marks a request that cannot be planned (a replica count out
// of range, a worker id the fleet would refuse).
var ErrInvalid = errors.New("invalid scale request")

// Workload is what scaling needs to know of the worker StatefulSet.
type Workload struct {
	// Namespace and Name name the StatefulSet.
	Namespace, Name string
	// Replicas is its desired replica count (spec.replicas).
	Replicas int32
	// OrdinalStart is the ordinal of its first pod (spec.ordinals.start,
	// 0 by default).
	OrdinalStart int32
}

// PodName is the name of the pod of ordinal i: the id its worker
// registers with.
func (w Workload) PodName(i int32) string {
	return w.Name + "-" + strconv.FormatInt(int64(i), 10)
}

// Ordinal is the ordinal of the pod whose worker has id, and false when id
// is not the name of one of the StatefulSet's pods.
func (w Workload) Ordinal(id string) (int32, bool) {
	rest, ok := strings.CutPrefix(id, w.Name+"-")
	if !ok || rest == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 32)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != rest {
		return 0, false
	}
	return int32(n), true
}

// Plan is what a change of the replica count does to the fleet.
type Plan struct {
	From, To int32
	// Drain lists the registered workers whose pods the scale-down
	// removes, in ordinal order: they are drained with migration and must
	// hold no session before the scale changes.
	Drain []string
	// Restore lists those of Drain that were active: what a scale-down
	// that gives up undrains.
	Restore []string
	// Unregistered lists the pods the scale-down removes whose workers
	// are not in the fleet (nothing to drain).
	Unregistered []string
	// Await lists the workers a scale-up adds, in ordinal order: Scale
	// waits until each has registered and is active.
	Await []string
	// Stale lists those of Await that are registered and draining before
	// the scale-up: a pod still terminating after an earlier scale-down.
	// Scale waits for it to leave the fleet before it takes the id's
	// registration as the new pod's.
	Stale []string
	// Draining lists the workers of pods that stay (ordinal below To) and
	// are draining: they take no sessions until someone undrains them.
	Draining []string
	// Moving is the number of sessions the Drain workers hold, and Room
	// the free slots of the active workers that stay (this StatefulSet's
	// or any other of the fleet): where those sessions can migrate.
	Moving, Room int
}

// NewPlan returns the plan for changing w's replicas to `to`, given the
// fleet's workers. Workers whose ids are not pods of w are ignored.
func NewPlan(w Workload, to int32, workers []apiv1.Worker) (Plan, error) {
	if to < 0 || to > MaxReplicas {
		return Plan{}, fmt.Errorf("%w: replicas %d is outside 0..%d", ErrInvalid, to, MaxReplicas)
	}
	if w.Replicas < 0 || w.OrdinalStart < 0 {
		return Plan{}, fmt.Errorf("%w: %s/%s has replicas %d from ordinal %d", ErrInvalid, w.Namespace, w.Name, w.Replicas, w.OrdinalStart)
	}
	top := max(w.Replicas, to)
	if top > 0 {
		if last := w.PodName(w.OrdinalStart + top - 1); !fleetstore.ValidName(last) {
			return Plan{}, fmt.Errorf("%w: pod name %q is not a valid worker id (at most 64 letters, digits, '.', '_' or '-')", ErrInvalid, last)
		}
	}
	byID := make(map[string]apiv1.Worker, len(workers))
	for _, wk := range workers {
		byID[wk.ID] = wk
	}
	p := Plan{From: w.Replicas, To: to}
	for i := w.OrdinalStart; i < w.OrdinalStart+top; i++ {
		id := w.PodName(i)
		wk, registered := byID[id]
		switch rel := i - w.OrdinalStart; {
		case rel < min(w.Replicas, to): // stays
			if registered && wk.State == apiv1.WorkerDraining {
				p.Draining = append(p.Draining, id)
			}
		case rel < w.Replicas: // goes
			if !registered {
				p.Unregistered = append(p.Unregistered, id)
				continue
			}
			p.Drain = append(p.Drain, id)
			p.Moving += wk.Sessions
			if wk.State == apiv1.WorkerActive {
				p.Restore = append(p.Restore, id)
			}
		default: // comes
			p.Await = append(p.Await, id)
			if registered && wk.State != apiv1.WorkerActive {
				p.Stale = append(p.Stale, id)
			}
		}
	}
	for _, wk := range workers {
		if wk.State != apiv1.WorkerActive || holds(p.Drain, wk.ID) {
			continue
		}
		for _, g := range wk.GPUs {
			p.Room += int(g.Slots) - int(min(g.Used, g.Slots))
		}
	}
	return p, nil
}

// Holds reports whether id is one of ids.
func holds(ids []string, id string) bool { return slices.Contains(ids, id) }
