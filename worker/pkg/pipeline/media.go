package pipeline

import (
	"context"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/worker/pkg/composite"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/melspec"
)

// melKeep is how many whole seconds of mel frames the media goroutine keeps
// before dropping the oldest second (a window never reaches back that far).
const melKeep = 2

// mediaState is the media goroutine's working set, allocated once.
type mediaState struct {
	tick int64
	// cleanFrom is the first video frame whose mel window holds no
	// interrupted speech.
	cleanFrom int64
	// delay holds the speech of the last D+1 ticks (D: Pipeline.Delay,
	// sized at New); slot tick%len is the newest. voiced marks slots that
	// held queued speech.
	delay  [][TickSamples]float32
	voiced []bool
	loud   []bool
	// spoken holds, per delay slot, the ends of tracked sentences taken
	// into it: reported once that slot's audio has been sent.
	spoken [][]spokenMark

	mel     []melspec.Frame
	melBase int64 // video frame index of mel[0]'s window start
	// lookAhead is the model's: frame v's window ends at v·40 ms + it.
	lookAhead time.Duration

	melWin [melspec.WindowSize]float32
	face   []float32
	out    []float32
	// batch is the one frame each model run takes: melWin, face and out.
	batch  [1]lipsync.Frame
	ctx    context.Context // Run's, for the model's runs
	canvas *frame.I420

	pcm []float32 // scratch for one tick's samples

	speaking atomic.Bool
	keyframe atomic.Bool
	frames   atomic.Uint64
	// keyframes, inferCount and audioPackets count what was sent.
	keyframes    atomic.Uint64
	inferCount   atomic.Uint64
	audioPackets atomic.Uint64
	// sharedFrames counts the frames sent from Options.IdleVideo;
	// onShared: the last frame sent was one.
	sharedFrames atomic.Uint64
	onShared     bool
	wasVoice     bool
	inferred     atomic.Bool // the last frame sent came from the model (for tests)
}

func (m *mediaState) init(p *Pipeline, w, h int) error {
	sh := p.opt.Model.Shape()
	m.lookAhead = sh.LookAhead
	m.face = make([]float32, sh.FaceLen())
	m.out = make([]float32, sh.OutLen())
	m.batch[0] = lipsync.Frame{Mel: m.melWin[:], Face: m.face, Out: m.out}
	m.ctx = context.Background()
	m.mel = make([]melspec.Frame, 0, (melKeep+2)*melspec.FramesPerSecond)
	m.pcm = make([]float32, TickSamples)
	c, err := frame.New(w, h)
	if err != nil {
		return fmt.Errorf("pipeline: output frame: %w", err)
	}
	m.canvas = c
	return nil
}

// initDelay sizes the delay line for d ticks.
func (m *mediaState) initDelay(d int) {
	m.delay = make([][TickSamples]float32, d+1)
	m.voiced = make([]bool, d+1)
	m.loud = make([]bool, d+1)
	m.spoken = make([][]spokenMark, d+1)
}

// Run runs the pipeline until ctx ends (returning nil) or a fatal error (a
// sink, encoder or inference failure, or a panic inside the pipeline, which
// it recovers and returns as an error). Call it once.
func (p *Pipeline) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return guard("synthesis", func() error { return p.synthesize(ctx) }) })
	g.Go(func() error { return guard("media", func() error { return p.mediaLoop(ctx) }) })
	err := g.Wait()
	p.input.close()
	return err
}

// guard runs f, turning a panic into an error.
func guard(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pipeline: panic in %s goroutine: %v\n%s", what, r, debug.Stack())
		}
	}()
	return f()
}

// maxCatchUp is the most extra frames one tick sends to catch up with the
// wall clock after a stall; a longer stall is skipped (media time then
// lags wall time by the rest, audio and video still together).
const maxCatchUp = LatencyTicks

func (p *Pipeline) mediaLoop(ctx context.Context) error {
	p.media.ctx = ctx
	t := p.opt.Clock.NewTicker(FrameDuration)
	defer t.Stop()
	var t0 time.Time
	var base int64 // m.tick at t0
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return nil
		case now = <-t.C():
		}
		if t0.IsZero() {
			t0, base = now, p.media.tick
		}
		// A ticker drops ticks while the receiver is busy: send the
		// frames the wall clock says are due, at least one per tick.
		due := base + int64(now.Sub(t0)/FrameDuration) + 1
		steps := max(1, due-p.media.tick)
		var skipped int64
		if steps > 1+maxCatchUp {
			skipped = steps - 1 - maxCatchUp
			p.log.Warn("media clock stalled: skipping", "frames", skipped)
			steps = 1 + maxCatchUp
			t0, base = now, p.media.tick+steps-1
		}
		if obs := p.opt.ObserveLate; obs != nil && steps > 1 {
			obs(steps-1, skipped)
		}
		for range steps {
			if err := p.step(); err != nil {
				if ctx.Err() != nil {
					return nil // stopped mid-tick: the model saw ctx end
				}
				return err
			}
		}
	}
}

// step runs one tick of the media clock.
func (p *Pipeline) step() error {
	m := &p.media
	n := m.tick
	m.tick++
	if h := p.opt.tickHook; h != nil {
		h(n)
	}
	select {
	case <-p.input.flushed:
		// Interrupted: the speech waiting in the delay line is dropped, and
		// so are the frames it would have driven (their mel windows hold
		// it), even if new speech follows at once.
		for i := range m.delay {
			clear(m.delay[i][:])
			m.voiced[i], m.loud[i] = false, false
			clear(m.spoken[i])
			m.spoken[i] = m.spoken[i][:0]
		}
		m.cleanFrom = n
	default:
	}
	slot := int(n % int64(len(m.delay)))
	got, spoken := p.input.take(m.delay[slot][:], m.spoken[slot][:0])
	m.spoken[slot] = spoken
	m.voiced[slot] = got > 0
	m.loud[slot] = rms(m.delay[slot][:]) >= p.opt.EnergyThreshold
	m.mel = p.mel.Append(m.mel, m.delay[slot][:])
	d := int64(len(m.delay) - 1)
	p.trimMel(n - d)

	// The frame sent now is the one whose speech was taken D ticks ago.
	v := n - d
	out := (slot + 1) % len(m.delay) // the oldest slot
	ts := time.Duration(n) * FrameDuration
	if err := p.video(v, ts); err != nil {
		return err
	}
	if err := p.audio(m.delay[out][:], ts); err != nil {
		return err
	}
	// The sentences whose last samples were just sent have been spoken.
	for _, s := range m.spoken[out] {
		s.progress(s.rest)
	}
	clear(m.spoken[out])
	m.spoken[out] = m.spoken[out][:0]
	p.speakingEvents(m.voiced[out], ts)
	m.frames.Add(1)
	return nil
}

// video renders and sends video frame v (negative: before any speech).
func (p *Pipeline) video(v int64, ts time.Duration) error {
	m := &p.media
	idle, box := p.opt.Avatar.Frame(int(max(v, 0)))
	img := idle
	infer := v >= m.cleanFrom && m.anyLoud()
	m.inferred.Store(infer)
	if infer {
		// The window ends at the frame's time + the look-ahead; mel frames
		// before the last interrupt (speech that was dropped) are silence.
		first := melspec.WindowStartAt(int(v-m.melBase), m.lookAhead)
		melspec.WindowFrom(&m.melWin, m.mel, first, melspec.WindowStart(int(m.cleanFrom-m.melBase)))
		c := p.comps[box]
		if err := c.Crop(m.face, idle); err != nil {
			return fmt.Errorf("pipeline: crop frame %d: %w", v, err)
		}
		start := time.Now()
		if err := p.opt.Model.Run(m.ctx, m.batch[:]); err != nil {
			return fmt.Errorf("pipeline: frame %d: %w", v, err)
		}
		if obs := p.opt.ObserveInference; obs != nil {
			obs(time.Since(start))
		}
		m.inferCount.Add(1)
		if err := p.composite(c, idle); err != nil {
			return fmt.Errorf("pipeline: composite frame %d: %w", v, err)
		}
		img = m.canvas
	}
	if sent, err := p.sharedIdle(v, ts, infer); sent || err != nil {
		return err
	}
	if m.keyframe.Swap(false) {
		p.vp8.ForceKeyframe()
	}
	encStart := time.Now()
	if err := p.vp8.SetFocus(box); err != nil { // the face: see codec.VP8Options.Focus
		return fmt.Errorf("pipeline: frame %d: %w", v, err)
	}
	pkt, key, err := p.vp8.Encode(img)
	if err != nil {
		return fmt.Errorf("pipeline: frame %d: %w", v, err)
	}
	if obs := p.opt.ObserveEncode; obs != nil {
		obs(time.Since(encStart))
	}
	if err := p.opt.Sink.WriteVideo(Sample{Data: pkt, Duration: FrameDuration, Timestamp: ts, Keyframe: key}); err != nil {
		return fmt.Errorf("pipeline: sink video at %v: %w", ts, err)
	}
	if key {
		m.keyframes.Add(1)
	}
	return nil
}

// composite pastes the frame's model output (m.out, from the face input
// m.face) onto idle in m.canvas, the way the model declared.
func (p *Pipeline) composite(c *composite.Compositor, idle *frame.I420) error {
	m := &p.media
	if p.opt.Model.Shape().PasteChange {
		return c.CompositeChange(m.canvas, idle, m.face, m.out)
	}
	return c.Composite(m.canvas, idle, m.out)
}

// anyLoud: some speech in the delay line (the frame's own tick and the D
// after it) is above the gate, so the part of the window of the frame sent
// now from its own time on holds speech.
func (m *mediaState) anyLoud() bool {
	for _, l := range m.loud {
		if l {
			return true
		}
	}
	return false
}

// trimMel drops whole seconds of mel frames that no window from video frame
// v on reaches. A second is exactly 25 video frames and 80 mel frames, so
// shifting both indices keeps WindowStart's arithmetic exact. When the mel
// buffer holds only trimmed frames the stream continues where it was.
func (p *Pipeline) trimMel(v int64) {
	m := &p.media
	for v-m.melBase >= (melKeep+1)*melspec.VideoFPS && len(m.mel) >= melspec.FramesPerSecond {
		n := copy(m.mel, m.mel[melspec.FramesPerSecond:])
		m.mel = m.mel[:n]
		m.melBase += melspec.VideoFPS
	}
}

// audio sends one tick of 16 kHz speech as two Opus packets stamped ts and
// ts+20 ms. The encoder takes 16 kHz input itself: the speech has nothing
// above 8 kHz, so upsampling to 48 kHz first would only cost time.
func (p *Pipeline) audio(pcm []float32, ts time.Duration) error {
	fr := len(pcm) / 2
	for k := range 2 {
		pkt, err := p.opus.EncodeFloat32(pcm[k*fr : (k+1)*fr])
		if err != nil {
			return fmt.Errorf("pipeline: audio at %v: %w", ts, err)
		}
		at := ts + time.Duration(k)*AudioFrameDuration
		if err := p.opt.Sink.WriteAudio(Sample{Data: pkt, Duration: AudioFrameDuration, Timestamp: at}); err != nil {
			return fmt.Errorf("pipeline: sink audio at %v: %w", at, err)
		}
		p.media.audioPackets.Add(1)
	}
	return nil
}

// speakingEvents tracks the speaking state of the frames sent.
func (p *Pipeline) speakingEvents(voiced bool, ts time.Duration) {
	m := &p.media
	if voiced == m.wasVoice {
		return
	}
	if !voiced {
		// A gap between two synthesised pieces is not the end of speech.
		if q, syn := p.input.state(); q > 0 || syn {
			return
		}
	}
	m.wasVoice = voiced
	m.speaking.Store(voiced)
	if p.opt.OnEvent == nil {
		return
	}
	kind := SpeakingEnded
	if voiced {
		kind = SpeakingStarted
	}
	p.opt.OnEvent(Event{Kind: kind, Timestamp: ts})
}

func rms(s []float32) float64 {
	var sum float64
	for _, x := range s {
		sum += float64(x) * float64(x)
	}
	return math.Sqrt(sum / float64(len(s)))
}
