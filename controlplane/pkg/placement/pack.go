package placement

import (
	"math/rand/v2"
	"sort"
)

// Pack fills the busiest GPUs first, so whole workers stay empty and can be
// scaled down. Ties are broken at random so concurrent replicas spread their
// attempts over equally busy GPUs instead of racing for one slot.
type Pack struct{}

// Select implements Selector.
func (Pack) Select(candidates []Candidate, rng *rand.Rand) []Candidate {
	out := Feasible(candidates)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Free() != b.Free() {
			return a.Free() < b.Free()
		}
		return workerLoad(a) > workerLoad(b)
	})
	return out
}
