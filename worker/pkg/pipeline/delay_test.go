package pipeline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync/lipsynctest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/melspec"
)

// TestDelayTicks: the delay line is look-ahead + STFT half window + margin,
// less the tick's own 40 ms, in whole ticks, never below what the mel
// arithmetic needs and never above LatencyTicks.
func TestDelayTicks(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		lookAhead, margin time.Duration
		want              int
	}{
		{200 * ms, 1 * ms, 5},
		{200 * ms, 15 * ms, 5},
		{200 * ms, 16 * ms, 6},
		{200 * ms, time.Hour, LatencyTicks}, // the margin is bounded
		{80 * ms, 0, 2},
		{80 * ms, 3 * ms, 2},
		{80 * ms, 15 * ms, 2},
		{80 * ms, 16 * ms, 3},
		{80 * ms, -time.Second, 2},
		{0, 0, 0},
		{0, 40 * ms, 1},
		{100 * ms, 0, 3}, // 125 ms − 40 → 3 ticks
	} {
		if got := DelayTicks(c.lookAhead, c.margin); got != c.want {
			t.Errorf("DelayTicks(%v, %v) = %d, want %d", c.lookAhead, c.margin, got, c.want)
		}
	}
	// Whatever the margin, the window of the frame sent is complete: its
	// last mel frame has been emitted when the frame leaves.
	for la := time.Duration(0); la <= lipsync.MaxLookAhead; la += ms {
		d := DelayTicks(la, 0)
		for v := range 10 {
			last := melspec.WindowStartAt(v, la) + melspec.WindowFrames - 1
			have := melspec.FrameCount((v + d + 1) * TickSamples) // samples taken by tick v+d
			if streamed := (v+d+1)*TickSamples - melspec.NFFT/2; last*melspec.Hop > streamed || last >= have+2 {
				t.Fatalf("look-ahead %v, delay %d: frame %d needs mel frame %d; %d samples taken", la, d, v, last, (v+d+1)*TickSamples)
			}
		}
	}
}

// melModel is a lipsync.Model that records the mel window of every run and
// the video frame it rendered (the frames already sent, less the delay).
type melModel struct {
	lipsynctest.FakeModel
	sink *recorder
	mu   sync.Mutex
	runs map[int64][]float32
	d    int64
}

func (m *melModel) Run(ctx context.Context, batch []lipsync.Frame) error {
	v, _ := m.sink.samples()
	m.mu.Lock()
	m.runs[int64(len(v))-m.d] = append([]float32(nil), batch[0].Mel...)
	m.mu.Unlock()
	return m.FakeModel.Run(ctx, batch)
}

func (m *melModel) window(t *testing.T, v int64) []float32 {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.runs[v]
	if !ok {
		t.Fatalf("frame %d was not rendered by the model", v)
	}
	return w
}

// column is the loudest band of the window's t-th mel frame.
func column(w []float32, t int) float32 {
	s := melspec.Silence
	for b := range melspec.Bands {
		s = max(s, w[b*melspec.WindowFrames+t])
	}
	return s
}

// TestWindowPlacement: the delay line is sized from the model's look-ahead
// (and the margin) at New; the frame whose own time is the first of a tone
// gets the window ending at its time + the look-ahead (the tone from index
// 16 − LookAheadFrames on); after an interrupt, the part of a frame's
// window before it (speech that was dropped) is silence.
func TestWindowPlacement(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		lookAhead time.Duration
		delay     int
		toneAt    int // the first index of the window holding the tone
	}{
		{80 * time.Millisecond, 2, 10},
		{200 * time.Millisecond, 5, 0},
		{0, 0, 16},
	} {
		t.Run(c.lookAhead.String(), func(t *testing.T) {
			var m *melModel
			h := e.start(t, func(o *Options) {
				_ = o.Model.Close()
				m = &melModel{FakeModel: lipsynctest.FakeModel{S: lipsync.Shape{FaceSize: 96, MaxBatch: 1, LookAhead: c.lookAhead}},
					sink: o.Sink.(*recorder), runs: map[int64][]float32{}, d: int64(c.delay)}
				o.Model = m
				o.ProcessingMargin = time.Millisecond
			})
			if got := h.p.Delay(); got.Ticks != c.delay || got.LookAhead != c.lookAhead || got.Margin != time.Millisecond {
				t.Fatalf("Delay %+v, want %d ticks for %v", got, c.delay, c.lookAhead)
			}
			const silent = 10
			pcm := append(make([]float32, silent*TickSamples), tone16k(800*time.Millisecond, 0.3)...)
			if err := h.p.PushPCM(pcm); err != nil {
				t.Fatal(err)
			}
			h.tick(t, silent+c.delay+12)
			w := m.window(t, silent)
			for i := range melspec.WindowFrames {
				col := column(w, i)
				switch {
				case i < c.toneAt-2 && col != melspec.Silence:
					t.Errorf("frame %d, window index %d: %.2f, want silence (the tone starts at index %d)", silent, i, col, c.toneAt)
				case i > c.toneAt && col < melspec.Silence+2:
					t.Errorf("frame %d, window index %d: %.2f, want the tone", silent, i, col)
				}
			}
			// The tone's audio leaves with the frame: loud packets from
			// tick silent+delay on.
			_, audio := h.sink.samples()
			if n := 2 * (silent + c.delay); len(audio[n-1].Data) >= len(audio[n+2].Data) {
				t.Errorf("audio packet %d (%d bytes) not quieter than %d (%d bytes)", n-1, len(audio[n-1].Data), n+2, len(audio[n+2].Data))
			}
			if c.toneAt == 0 {
				return // the window has no past to clear
			}
			// Interrupt in the middle of the tone, and speak again at once.
			h.p.Interrupt()
			if err := h.p.PushPCM(tone16k(800*time.Millisecond, 0.3)); err != nil {
				t.Fatal(err)
			}
			clean := int64(h.sent)
			h.tick(t, c.delay+12)
			w = m.window(t, clean)
			for i := range melspec.WindowFrames {
				col := column(w, i)
				switch {
				case i < c.toneAt && col != melspec.Silence:
					t.Errorf("after the interrupt, frame %d, window index %d: %.2f, want silence", clean, i, col)
				case i > c.toneAt && col < melspec.Silence+2:
					t.Errorf("after the interrupt, frame %d, window index %d: %.2f, want the new tone", clean, i, col)
				}
			}
		})
	}
}

// TestMeasuredMargin: without a given margin New measures one (bounded),
// and the delay line is sized from it.
func TestMeasuredMargin(t *testing.T) {
	e := newEnv(t)
	h := e.start(t, nil)
	d := h.p.Delay()
	if d.Margin <= 0 || d.Margin > MaxMargin {
		t.Fatalf("measured margin %v, want in (0, %v]", d.Margin, MaxMargin)
	}
	if want := DelayTicks(d.LookAhead, d.Margin); d.Ticks != want {
		t.Fatalf("delay %d ticks, want %d for %+v", d.Ticks, want, d)
	}
	t.Logf("default model: look-ahead %v, render margin %v, delay %d ticks (%v)", d.LookAhead, d.Margin, d.Ticks, d.Duration())
}

// TestMarginOfAFailingModel: a model whose warm-up render fails does not
// fail New (it fails the session when it renders, as before); the delay
// line takes the largest margin.
func TestMarginOfAFailingModel(t *testing.T) {
	e := newEnv(t)
	fake := &lipsynctest.FakeModel{}
	fake.Fail(errors.New("boom"))
	p, err := New(Options{Avatar: e.pack, Model: fake, Sink: discard{}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	if d := p.Delay(); d.Margin != MaxMargin || d.Ticks != LatencyTicks {
		t.Fatalf("delay %+v, want the largest margin and %d ticks", d, LatencyTicks)
	}
}
