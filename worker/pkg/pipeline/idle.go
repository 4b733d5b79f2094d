package pipeline

import (
	"fmt"
	"time"
)

// IdleVideo is an avatar's idle loop encoded once and shared by every idle
// session of that avatar (package idleloop): while a session is not
// speaking it may send these frames instead of encoding its own.
//
// The shared frames form one VP8 stream: a P-frame of it refers to the
// frames of that stream since its last keyframe. So a session switches to
// it only at one of its keyframes, then sends it frame after frame; it
// leaves it for its own encoder (speech, or a keyframe request) with a
// keyframe of its own encoder. A decoder thus never gets a P-frame whose
// references it has not decoded, and the picture does not jump: the
// shared frame of tick t shows the same idle image the session would have
// encoded.
type IdleVideo interface {
	// Frame returns the shared frame of tick t ≥ 0 (the encoding of
	// Avatar.Frame(t)) and whether it is a keyframe; ok is false when
	// none is ready. The data is shared: never modified.
	Frame(t int64) (data []byte, keyframe, ok bool)
	// Release gives the session's hold back (Close calls it).
	Release()
}

// sharedIdle sends frame v from Options.IdleVideo if the session may: v is
// an idle frame (no inference) and either the session is on the shared
// stream already and no keyframe was asked for, or the shared frame is a
// keyframe. It reports whether it sent the frame; when it did not and the
// session was on the shared stream, the session's own encoder is made to
// start with a keyframe.
func (p *Pipeline) sharedIdle(v int64, ts time.Duration, infer bool) (bool, error) {
	m := &p.media
	iv := p.opt.IdleVideo
	if iv == nil {
		return false, nil
	}
	if !infer && v >= 0 {
		data, key, ok := iv.Frame(v)
		if ok && (key || (m.onShared && !m.keyframe.Load())) {
			if key {
				m.keyframe.Store(false) // this keyframe answers the request
			}
			m.onShared = true
			if err := p.opt.Sink.WriteVideo(Sample{Data: data, Duration: FrameDuration, Timestamp: ts, Keyframe: key}); err != nil {
				return true, fmt.Errorf("pipeline: sink video at %v: %w", ts, err)
			}
			m.sharedFrames.Add(1)
			if key {
				m.keyframes.Add(1)
			}
			return true, nil
		}
	}
	if m.onShared {
		// The own encoder's references are stale (it has not seen the
		// frames the viewers decoded since): start over with a keyframe.
		m.onShared = false
		p.vp8.ForceKeyframe()
	}
	return false, nil
}
