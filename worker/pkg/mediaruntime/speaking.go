package mediaruntime

import (
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// DefaultSpeakingBuffer is Config.SpeakingBuffer's default: speaking
// changes held for a slow reader before they are dropped.
const DefaultSpeakingBuffer = 256

var _ runtime.SpeakingReporter = (*Runtime)(nil)

// Speaking implements runtime.SpeakingReporter.
func (r *Runtime) Speaking() <-chan runtime.Speaking { return r.speaking }

// onSpeaking is a session pipeline's OnEvent. It runs on the session's
// media goroutine, so it never blocks: a change that finds the channel full
// is dropped and counted. Each session's changes are sent from its one
// media goroutine, so they keep their order; Close closes the channel only
// after every media goroutine has returned.
func (r *Runtime) onSpeaking(sess *fleetv1.Session) func(pipeline.Event) {
	return func(e pipeline.Event) {
		sp := runtime.Speaking{SessionID: sess.GetId(), Started: e.Kind == pipeline.SpeakingStarted,
			MediaTime: e.Timestamp, Session: sess}
		select {
		case r.speaking <- sp:
		default:
			n := r.speakingDropped.Add(1)
			r.log.Warn("speaking change dropped: nobody reads them fast enough",
				"session", sess.GetId(), "kind", e.Kind.String(), "media_time", e.Timestamp, "dropped", n)
		}
	}
}
