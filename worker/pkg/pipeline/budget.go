package pipeline

import (
	"fmt"
	"sync/atomic"
)

// Budget counts the input a set of pipelines (a worker's sessions) holds in
// memory, in bytes: queued speech samples (4 bytes each, audio being
// decoded included) and text waiting for synthesis. Pipelines share one
// Budget through Options.Budget; each adds and removes its own bytes as
// its queue changes, with one atomic add, so the accounting costs nothing
// on the media path. A Pipeline refuses new input that would take Used
// past Limit (ErrOverBudget) before allocating it; live audio and
// synthesised speech, which are not refused, can take it past the limit,
// which Over reports so that the owner sheds a session. The methods are
// safe for concurrent use, and on a nil *Budget (no limit).
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a Budget of limit bytes; 0 or less means no limit (the
// bytes are still counted).
func NewBudget(limit int64) *Budget {
	return &Budget{limit: max(limit, 0)}
}

// Limit is the budget in bytes (0: none).
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// Used is the bytes the pipelines hold now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Over reports whether the pipelines hold more than the limit.
func (b *Budget) Over() bool {
	return b != nil && b.limit > 0 && b.used.Load() > b.limit
}

// String describes the budget for logs and errors.
func (b *Budget) String() string {
	if b.Limit() == 0 {
		return fmt.Sprintf("%d bytes held, no limit", b.Used())
	}
	return fmt.Sprintf("%d of %d bytes held", b.Used(), b.Limit())
}

// tryAdd adds n bytes if they fit under the limit.
func (b *Budget) tryAdd(n int64) bool {
	if b == nil {
		return true
	}
	for {
		cur := b.used.Load()
		if b.limit > 0 && n > 0 && cur+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// add adds n bytes (negative to give them back), whatever the limit.
func (b *Budget) add(n int64) {
	if b != nil && n != 0 {
		b.used.Add(n)
	}
}
