package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// confirmEvery bounds how often ConfirmSlots reads etcd: a full fleet that
// clients keep asking costs a replica at most one slot listing this often.
const confirmEvery = 250 * time.Millisecond

// ConfirmSlots reads every slot key from etcd and, when the read is newer
// than the cache, takes the fleet's slot use from it. Placement asks before
// it answers no_capacity: the cache learns of other replicas' releases
// only from its watch, which can lag by seconds (after an etcd leader's
// loss, until its stall check relists), and a fleet that looks full may
// not be. It reports whether a fresh read was applied; a call within
// confirmEvery of the last read's start (one in flight included) reads
// nothing and reports false, so a full fleet that clients keep asking
// costs one listing per confirmEvery.
func (r *Registry) ConfirmSlots(ctx context.Context) (bool, error) {
	r.confirmMu.Lock()
	if time.Since(r.confirmedAt) < confirmEvery {
		r.confirmMu.Unlock()
		return false, nil
	}
	r.confirmedAt = time.Now()
	r.confirmMu.Unlock()

	held, rev, err := r.store.SlotHolders(ctx, 0)
	if err != nil {
		return false, fmt.Errorf("confirm slot use: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev <= r.revision || rev <= r.slotsAt {
		return false, nil // the cache is as new already
	}
	for _, e := range r.entries {
		clear(e.used)
		clear(e.perGPU)
	}
	for key, session := range held {
		pk, err := r.keys.Parse(key)
		if err != nil || pk.Kind != fleetstore.KindSlot {
			continue
		}
		// Also for a worker whose record the watch has yet to bring, as
		// the watch would: its slot events up to this read are skipped.
		getEntry(r.entries, pk.Worker).reserve(SlotRef{GPU: pk.GPU, Slot: pk.Slot}, session)
	}
	for id, e := range r.entries {
		if e.empty() {
			delete(r.entries, id)
		}
	}
	// Slot events the watch brings later that this read already holds are
	// skipped (apply), so a late reservation event cannot mark a slot the
	// read saw freed.
	r.slotsAt = rev
	return true, nil
}
