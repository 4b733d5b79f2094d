package pipeline

import (
	"fmt"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/melspec"
)

// The A/V delay line (README, "Latency contract"). The pipeline sends, at
// tick n, the video frame and the audio of the speech it took at tick
// n−D, so that frame's mel window, which reaches the model's look-ahead L
// past the frame's own time, is complete. D is sized per pipeline from the
// model's shape:
//
//	D = ceil((L + STFTHalfWindow + margin − FrameDuration) / FrameDuration)
//
// The STFT's half window is there because the mel frame centred at a time
// needs 25 ms of audio past it; one FrameDuration comes off because a tick
// takes its whole 40 ms of speech at its start, so the frame sent D ticks
// later already has audio up to (D+1)·40 ms past its own time. The margin
// is the measured cost of rendering one frame (see Options.ProcessingMargin),
// at most MaxMargin. D is never below what the mel arithmetic needs
// (minDelayTicks), nor above LatencyTicks: L = 200 ms (Wav2Lip's window)
// gives 5 ticks when rendering takes under 15 ms, 6 otherwise; L = 80 ms
// gives 2 (80 ms) and 3 when rendering takes over 15 ms.
const (
	// STFTHalfWindow is the audio a mel frame needs past its centre.
	STFTHalfWindow = time.Duration(melspec.NFFT/2) * time.Second / melspec.SampleRate
	// MaxMargin bounds the processing margin: a model that renders a frame
	// in more than a tick cannot keep up with the clock anyway.
	MaxMargin = FrameDuration
)

// Delay is a pipeline's A/V delay line.
type Delay struct {
	// Ticks is D: how many ticks both tracks lag the speech queue.
	Ticks int
	// LookAhead is the model's (lipsync.Shape.LookAhead).
	LookAhead time.Duration
	// Margin is the processing margin it was sized with.
	Margin time.Duration
}

// Duration is Ticks as a duration.
func (d Delay) Duration() time.Duration { return time.Duration(d.Ticks) * FrameDuration }

// DelayTicks is D for a look-ahead and a processing margin (clamped to
// 0..MaxMargin).
func DelayTicks(lookAhead, margin time.Duration) int {
	margin = min(max(margin, 0), MaxMargin)
	need := lookAhead + STFTHalfWindow + margin - FrameDuration
	d := 0
	if need > 0 {
		d = int((need + FrameDuration - 1) / FrameDuration)
	}
	return min(max(d, minDelayTicks(lookAhead)), LatencyTicks)
}

// minDelayTicks is the least D for which the window of every frame is
// complete when the frame is sent: its last mel frame,
// WindowStart(v)+LookAheadFrames−1, is emitted once the stream holds the
// 400 samples past its centre, and WindowStart(v)·200 ≤ v·640.
func minDelayTicks(lookAhead time.Duration) int {
	need := (melspec.LookAheadFrames(lookAhead) + 1) * melspec.Hop
	d := 0
	for (d+1)*TickSamples < need {
		d++
	}
	return d
}

// Delay reports the pipeline's delay line.
func (p *Pipeline) Delay() Delay { return p.delay }

// measureMargin renders frame 0 of the avatar the way a speaking tick does
// (crop, model run with a silent window, composite), twice: the first may
// pay for a cold context; the second's cost is the margin. The VP8 encode
// is left out: encoding a frame the viewers never get would spend the rate
// control's bits on it and blur the stream's first frames.
func (p *Pipeline) measureMargin() (time.Duration, error) {
	m := &p.media
	idle, box := p.opt.Avatar.Frame(0)
	c := p.comps[box]
	for i := range m.melWin {
		m.melWin[i] = melspec.Silence
	}
	var cost time.Duration
	for range 2 {
		start := time.Now()
		if err := c.Crop(m.face, idle); err != nil {
			return 0, fmt.Errorf("pipeline: warm-up crop: %w", err)
		}
		if err := p.opt.Model.Run(m.ctx, m.batch[:]); err != nil {
			return 0, fmt.Errorf("pipeline: warm-up render: %w", err)
		}
		if err := p.composite(c, idle); err != nil {
			return 0, fmt.Errorf("pipeline: warm-up composite: %w", err)
		}
		cost = time.Since(start)
	}
	return min(cost, MaxMargin), nil
}
