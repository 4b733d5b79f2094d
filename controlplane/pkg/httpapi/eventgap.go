package httpapi

import (
	"context"
	"fmt"

	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// gapEvent is the data of the SSE "gap" event: the client asked to resume
// after event Requested, but the oldest event the stream still holds is
// FirstAvailable, so the events in between are lost to it.
type gapEvent struct {
	Requested      uint64 `json:"requested"`
	FirstAvailable uint64 `json:"first_available"`
}

// eventGap says whether the stream dropped events after sequence seq (age
// or size limits): its first sequence is past seq+1.
func (a *API) eventGap(ctx context.Context, seq uint64) (*gapEvent, error) {
	st, err := a.opts.Events.Stream(ctx, fleetbus.StreamName)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("events stream info: %w", err)
	}
	if first := info.State.FirstSeq; first > seq+1 {
		return &gapEvent{Requested: seq, FirstAvailable: first}, nil
	}
	return nil, nil
}
