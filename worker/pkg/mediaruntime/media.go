package mediaruntime

import (
	"sync/atomic"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// Media is a session's transport: the room of the embedded SFU that fans
// the session's tracks out to its viewers. The pipeline writes to it from
// its media goroutine, in timestamp order; an error from a write ends the
// session (END_REASON_ERROR). The runtime calls Close once, after the
// pipeline has stopped, whatever ended the session.
type Media interface {
	pipeline.Sink
	Close() error
}

// LiveKitReporter is a Media that also joined a LiveKit room: Status
// carries its connection's live state (runtime.Status.LiveKit).
type LiveKitReporter interface {
	LiveKitStatus() *fleetv1.LiveKitStatus
}

// MediaHooks are how a session's transport drives the session. Each is
// safe to call from any goroutine, at any time, as often as needed,
// including before NewMedia has returned and after the session ended
// (then it does nothing); none blocks.
type MediaHooks struct {
	// RequestKeyframe makes the next video frame a keyframe (a viewer
	// joined, or sent a PLI/FIR).
	RequestKeyframe func()
	// PushPCM appends live 16 kHz mono audio (a WHIP publisher's
	// microphone) to the session's speech, without interrupting it. It
	// counts as speech activity for the idle timeout. The slice is copied.
	PushPCM func(pcm16k []float32)
	// ViewersChanged reports the room's viewer count after every change.
	// With no viewer and no speech for the session's idle timeout the
	// session ends: END_REASON_IDLE_TIMEOUT if no viewer ever joined,
	// END_REASON_VIEWER_GONE if viewers joined and all left.
	ViewersChanged func(n int)
	// PushSpeech is PushPCM for audio whose playback is followed: sent, if
	// not nil, is called on the session's media goroutine (it must not
	// block) once the last of these samples has been written to the
	// transport; never when an interrupt dropped them. It reports whether
	// the speech queue took all of pcm.
	PushSpeech func(pcm16k []float32, sent func()) bool
	// Interrupt drops the session's queued speech, like the Interrupt RPC
	// (a LiveKit agent's lk.clear_buffer).
	Interrupt func()
	// End ends the session with reason (and a human-readable message) at
	// the next lifetime check, within LifetimeCheckPeriod: the transport
	// is gone for good (a LiveKit room closed, its agent left). The first
	// call wins.
	End func(reason fleetv1.EndReason, message string)
}

// NewMedia opens a session's transport when the session starts. The SFU
// adapter implements it (opening the session's room with the hooks as the
// room's callbacks); NewDiscardMedia is the transport of a worker with no
// SFU.
type NewMedia func(sess *fleetv1.Session, hooks MediaHooks) (Media, error)

// DiscardMedia is the transport of a headless worker: no viewers. It counts
// the samples it is given and drops them. It never calls its hooks.
type DiscardMedia struct {
	video, keyframes, audio atomic.Uint64
	closed                  atomic.Bool
}

// NewDiscardMedia implements NewMedia with a DiscardMedia.
func NewDiscardMedia(*fleetv1.Session, MediaHooks) (Media, error) { return &DiscardMedia{}, nil }

// WriteVideo implements pipeline.Sink.
func (d *DiscardMedia) WriteVideo(s pipeline.Sample) error {
	d.video.Add(1)
	if s.Keyframe {
		d.keyframes.Add(1)
	}
	return nil
}

// WriteAudio implements pipeline.Sink.
func (d *DiscardMedia) WriteAudio(pipeline.Sample) error {
	d.audio.Add(1)
	return nil
}

// Close implements Media.
func (d *DiscardMedia) Close() error {
	d.closed.Store(true)
	return nil
}

// Counts reports the video frames, keyframes and audio packets written.
func (d *DiscardMedia) Counts() (video, keyframes, audio uint64) {
	return d.video.Load(), d.keyframes.Load(), d.audio.Load()
}

// Closed reports whether Close was called.
func (d *DiscardMedia) Closed() bool { return d.closed.Load() }
