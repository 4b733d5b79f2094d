package mediaruntime

import (
	"errors"
	"fmt"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// InputUsed is the input all sessions buffer now, in bytes, and the
// budget (0: none).
func (r *Runtime) InputUsed() (used, budget int64) { return r.budget.Used(), r.budget.Limit() }

// MinHeapShedBytes is the least input a session must hold to be shed for
// heap pressure: when the heap is high for other reasons (a big avatar
// library, say), sessions that hold little would be shed for nothing.
const MinHeapShedBytes = 1 << 20

// shed ends the session that holds the most input, if one holds more than
// least: it is
// removed at once (its slot is free), its pipeline stopped, and it is
// reported on Ended as failed with END_REASON_ERROR, saying why. It
// returns the session's id ("" if none was shed).
func (r *Runtime) shed(least int64, why string) string {
	r.mu.Lock()
	var greedy *session
	most := least
	for _, s := range r.sessions {
		if p := s.p(); p != nil {
			if b := p.Buffered(); b > most {
				greedy, most = s, b
			}
		}
	}
	if greedy == nil {
		r.mu.Unlock()
		return ""
	}
	id := greedy.sess.GetId()
	r.removeLocked(id)
	r.mu.Unlock()
	greedy.p().CloseInput() // its bytes are free for the others now
	greedy.cancel()
	msg := fmt.Sprintf("session shed: it held %d bytes of queued input, the most on this worker, when %s", most, why)
	r.log.Warn("session shed", "session", id, "buffered_bytes", most, "why", why)
	r.wg.Add(1)
	go func() { // never blocks the caller: Ended's reader may be busy
		defer r.wg.Done()
		select {
		case r.ended <- runtime.Ended{SessionID: id, State: fleetv1.SessionState_SESSION_STATE_FAILED,
			Reason: fleetv1.EndReason_END_REASON_ERROR, Message: msg}:
		case <-r.done:
		}
	}()
	return id
}

// checkMemory sheds one session when the sessions' input is over the
// budget (live audio and synthesised speech are not refused, so they can
// pass it) or the live heap is over HeapLimit. It runs every
// LifetimeCheckPeriod.
func (r *Runtime) checkMemory() {
	switch {
	case r.budget.Over():
		r.shed(0, fmt.Sprintf("the sessions' input passed the worker's budget (%v)", r.budget))
	case r.heapLimit > 0:
		if h := r.heap(); h > r.heapLimit {
			r.shed(MinHeapShedBytes-1, fmt.Sprintf("the live heap (%d bytes) passed %d bytes", h, r.heapLimit))
		}
	}
}

// overBudget handles ErrOverBudget from session id's input: the greediest
// session is shed and, unless that was id itself, retry runs once more.
// What is left is returned as an error wrapping runtime.ErrSlotBusy
// (the worker has no room for it now; another time may do).
func (r *Runtime) overBudget(id string, err error, retry func() error) error {
	if !errors.Is(err, pipeline.ErrOverBudget) {
		return err
	}
	shed := r.shed(0, fmt.Sprintf("session %s asked for more input than the worker's budget (%v) has left", id, r.budget))
	if shed != "" && shed != id {
		if err = retry(); !errors.Is(err, pipeline.ErrOverBudget) {
			return err
		}
	}
	if shed == id {
		return fmt.Errorf("%w: %w; the session was shed", runtime.ErrSlotBusy, err)
	}
	return fmt.Errorf("%w: %w", runtime.ErrSlotBusy, err)
}
