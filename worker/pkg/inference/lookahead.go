package inference

import (
	"strconv"
	"time"
)

// LookAheadKey is the ONNX metadata key (ModelProto.metadata_props) in
// which a model declares its audio look-ahead: how far past a video
// frame's own time, in whole milliseconds, the mel window it is given must
// reach (README, "Latency contract"). The window is always 16 mel frames
// (200 ms), so the value is 0..200: 200 is Wav2Lip's window, which starts
// at the frame's own time; 80 puts the frame's time at the window's 11th
// mel frame.
const LookAheadKey = "avatarfleet.lookahead_ms"

// MaxLookAhead is the largest look-ahead a model may declare: the whole
// window. It is also the look-ahead of a model that declares none (the
// Wav2Lip window).
const MaxLookAhead = 200 * time.Millisecond

// maxLookAheadLen bounds the metadata value's length before it is parsed.
const maxLookAheadLen = 8

// parseLookAhead validates a declared look-ahead; a missing one is
// MaxLookAhead.
func parseLookAhead(v string, present bool) (time.Duration, error) {
	if !present {
		return MaxLookAhead, nil
	}
	if len(v) == 0 || len(v) > maxLookAheadLen {
		return 0, contractErr("metadata %s = %q: want an integer number of milliseconds, 0..%d", LookAheadKey, v, MaxLookAhead.Milliseconds())
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, contractErr("metadata %s = %q: want an integer number of milliseconds, 0..%d", LookAheadKey, v, MaxLookAhead.Milliseconds())
		}
	}
	ms, err := strconv.Atoi(v)
	if err != nil || ms > int(MaxLookAhead.Milliseconds()) {
		return 0, contractErr("metadata %s = %q: want 0..%d ms (at most the 200 ms mel window)", LookAheadKey, v, MaxLookAhead.Milliseconds())
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// LookAhead is the model's declared audio look-ahead (LookAheadKey), or
// MaxLookAhead when it declares none.
func (m *Model) LookAhead() time.Duration { return m.lookAhead }
