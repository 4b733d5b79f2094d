package sessions

import (
	"fmt"
	"strings"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/placement"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// candidates turns a registry snapshot into placement candidates for one
// session. A worker is eligible when it is active (not draining, not down),
// has not refused this session already, and serves the avatar and voice. An
// avatar or voice that no registered worker serves is an error, not a lack
// of capacity.
func candidates(views []registry.WorkerView, sess *fleetv1.Session, refused map[string]bool) ([]placement.Candidate, error) {
	var out []placement.Candidate
	avatarKnown, voiceKnown := false, false
	for _, v := range views {
		w := v.Worker
		servesAvatar, servesVoice := v.ServesAvatar(sess.GetAvatar()), v.ServesVoice(sess.GetVoice())
		avatarKnown = avatarKnown || servesAvatar
		voiceKnown = voiceKnown || servesVoice
		eligible := v.TakesSessions() && !refused[w.GetId()] && servesAvatar && servesVoice
		workerSlots := v.TotalSlots()
		for _, g := range w.GetGpus() {
			out = append(out, placement.Candidate{
				WorkerID:    w.GetId(),
				GPU:         g.GetIndex(),
				Slots:       int(g.GetSlots()),
				Used:        v.UsedOn(g.GetIndex()),
				WorkerUsed:  v.Sessions,
				WorkerSlots: workerSlots,
				Eligible:    eligible,
			})
		}
	}
	if len(views) > 0 && !avatarKnown {
		return nil, ErrUnknownAvatar
	}
	if len(views) > 0 && !voiceKnown {
		return nil, ErrUnknownVoice
	}
	return out, nil
}

// Defaults for a create request that names no avatar or voice.
const (
	DefaultAvatar = registry.Default
	DefaultVoice  = registry.Default
)

// candidateSummary is what placement saw, for the log of a refused
// create: worker/gpu used/slots, and "x" for an ineligible worker.
func candidateSummary(cands []placement.Candidate) string {
	var b strings.Builder
	for i, c := range cands {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s/%d:%d/%d", c.WorkerID, c.GPU, c.Used, c.Slots)
		if !c.Eligible {
			b.WriteByte('x')
		}
	}
	return b.String()
}
