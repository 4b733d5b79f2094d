package pipeline

import (
	"context"
	"image"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/codec/codectest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference/inferencetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// defaultPack builds the default avatar once for the whole test binary.
var defaultPack = sync.OnceValues(avatar.Default)

// recorder is a Sink that keeps everything.
type recorder struct {
	mu    sync.Mutex
	video []Sample
	audio []Sample
}

func (r *recorder) WriteVideo(s Sample) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.video = append(r.video, s)
	return nil
}

func (r *recorder) WriteAudio(s Sample) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.audio = append(r.audio, s)
	return nil
}

func (r *recorder) samples() (video, audio []Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sample(nil), r.video...), append([]Sample(nil), r.audio...)
}

// env is what a test pipeline is built from.
type env struct {
	pack  *avatar.Pack
	model *inference.Model
	tts   tts.Synthesizer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	m := inferencetest.Default(t)
	es, err := tts.NewEspeak(context.Background(), tts.EspeakOptions{})
	if err != nil {
		t.Fatalf("espeak-ng: %v (run scripts/setup.sh first)", err)
	}
	return &env{pack: pack, model: m, tts: es}
}

// harness is one pipeline on a manual clock, running.
type harness struct {
	p      *Pipeline
	sink   *recorder
	clock  *ManualClock
	cancel context.CancelFunc
	done   chan error
	sent   int // ticks taken
	d      int // the pipeline's delay line, in ticks
	mu     sync.Mutex
	events []Event
}

func (e *env) start(t testing.TB, tweak func(*Options)) *harness {
	t.Helper()
	c, err := lipsync.NewONNX(e.model, inference.ContextOptions{Batch: 1, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{sink: &recorder{}, clock: NewManualClock(), done: make(chan error, 1)}
	opt := Options{Avatar: e.pack, Model: c, TTS: e.tts, Sink: h.sink, Clock: h.clock,
		OnEvent: func(ev Event) { h.mu.Lock(); h.events = append(h.events, ev); h.mu.Unlock() }}
	if tweak != nil {
		tweak(&opt)
	}
	p, err := New(opt)
	if err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	h.p = p
	h.d = p.Delay().Ticks
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		h.stop(t)
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

// stop cancels Run and waits for it (once).
func (h *harness) stop(t testing.TB) error {
	t.Helper()
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	return nil
}

// tick drives n ticks; it fails if Run ends meanwhile.
func (h *harness) tick(t testing.TB, n int) {
	t.Helper()
	for range n {
		select {
		case h.clock.Ticks() <- time.Time{}:
			h.sent++
		case err := <-h.done:
			t.Fatalf("Run ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("tick not taken")
		}
	}
	// Wait until the last tick's frame is out.
	h.waitFrames(t)
}

func (h *harness) waitFrames(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := h.sink.samples()
		if len(v) == h.sent && h.p.Status().Frames == uint64(h.sent) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("frames not sent")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitSynthesized waits until Speak's text is all in the queue.
func (h *harness) waitSynthesized(t testing.TB) time.Duration {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := h.p.Status()
		if !st.Synthesizing && st.Queued > 0 {
			return st.Queued
		}
		if time.Now().After(deadline) {
			t.Fatalf("synthesis did not finish: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// decodeAll decodes a VP8 stream back to frames.
func decodeAll(t testing.TB, pkts []Sample, w, h int) []*image.YCbCr {
	t.Helper()
	frames := make([][]byte, len(pkts))
	for i, s := range pkts {
		frames[i] = s.Data
	}
	return codectest.DecodeVP8(t, frames, w, h)
}

// mouthDiff is the mean absolute Y difference between img and ref over the
// lower half of box (the mouth and jaw).
func mouthDiff(img *image.YCbCr, ref *frame.I420, box image.Rectangle) float64 {
	var sum float64
	n := 0
	for y := box.Min.Y + box.Dy()/2; y < box.Max.Y; y++ {
		for x := box.Min.X; x < box.Max.X; x++ {
			a := float64(img.Y[y*img.YStride+x])
			b := float64(ref.Y[y*ref.YStride+x])
			if a > b {
				sum += a - b
			} else {
				sum += b - a
			}
			n++
		}
	}
	return sum / float64(n)
}
