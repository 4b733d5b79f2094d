package sessions

import (
	"context"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// replaySpeech re-sends a moved session's unspoken speech to its new worker;
// replaced by the durable speech queue.
func (m *Manager) replaySpeech(ctx context.Context, sess *fleetv1.Session) error { return nil }
