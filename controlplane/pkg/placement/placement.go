// Package placement chooses where a new session goes. It is pure: it filters
// and orders (worker, GPU) candidates taken from a snapshot of the registry,
// and touches neither etcd nor the network, so every policy is tested
// without a cluster. Safety does not rest here: the reservation transaction
// refuses a slot that is taken, and placement then tries the next candidate.
package placement

import "math/rand/v2"

// Candidate is one GPU of one worker that may take a session.
type Candidate struct {
	WorkerID string
	GPU      uint32
	Slots    int // sessions the GPU may hold
	Used     int // sessions it holds now
	// WorkerUsed and WorkerSlots are the totals over the worker's GPUs.
	WorkerUsed, WorkerSlots int
	// Eligible is false for a worker that takes no new sessions (draining,
	// down) or lacks what the request needs (avatar, voice).
	Eligible bool
}

// Free is the number of free slots on the candidate's GPU.
func (c Candidate) Free() int { return c.Slots - c.Used }

// Load is the GPU's used fraction, 0..1.
func (c Candidate) Load() float64 {
	if c.Slots <= 0 {
		return 1
	}
	return float64(c.Used) / float64(c.Slots)
}

// Selector orders candidates: the first is the one to try first.
type Selector interface {
	// Select returns the feasible candidates in the order to try them. It
	// must not modify the input slice.
	Select(candidates []Candidate, rng *rand.Rand) []Candidate
}

// Feasible keeps the eligible candidates that have a free slot.
func Feasible(candidates []Candidate) []Candidate {
	out := make([]Candidate, 0, len(candidates))
	for _, c := range candidates {
		if c.Eligible && c.Free() > 0 {
			out = append(out, c)
		}
	}
	return out
}

// ByName returns the selector for a policy name ("spread" or "pack").
func ByName(name string) (Selector, bool) {
	switch name {
	case "", "spread":
		return Spread{}, true
	case "pack":
		return Pack{}, true
	}
	return nil, false
}
