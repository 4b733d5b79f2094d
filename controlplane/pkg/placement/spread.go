package placement

import "math/rand/v2"

// Spread balances load: it orders candidates by repeated power-of-two
// choices, taking the less loaded of two random picks each time. Unlike a
// strict least-loaded sort, concurrent replicas with the same view do not all
// pick the same GPU, while the result stays close to least-loaded.
type Spread struct{}

// Select implements Selector.
func (Spread) Select(candidates []Candidate, rng *rand.Rand) []Candidate {
	pool := Feasible(candidates)
	out := make([]Candidate, 0, len(pool))
	for len(pool) > 0 {
		i := rng.IntN(len(pool))
		if len(pool) > 1 {
			j := rng.IntN(len(pool) - 1)
			if j >= i {
				j++
			}
			if lessLoaded(pool[j], pool[i]) {
				i = j
			}
		}
		out = append(out, pool[i])
		pool[i] = pool[len(pool)-1]
		pool = pool[:len(pool)-1]
	}
	return out
}

// lessLoaded prefers the GPU with the lower used fraction, then the worker
// with the lower used fraction, then more free slots.
func lessLoaded(a, b Candidate) bool {
	if a.Load() != b.Load() {
		return a.Load() < b.Load()
	}
	wa, wb := workerLoad(a), workerLoad(b)
	if wa != wb {
		return wa < wb
	}
	return a.Free() > b.Free()
}

func workerLoad(c Candidate) float64 {
	if c.WorkerSlots <= 0 {
		return 1
	}
	return float64(c.WorkerUsed) / float64(c.WorkerSlots)
}
