package pipeline

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
)

// discard is a Sink that drops everything.
type discard struct{}

func (discard) WriteVideo(Sample) error { return nil }
func (discard) WriteAudio(Sample) error { return nil }

// newStepper builds a pipeline that is stepped by hand (no Run).
func newStepper(tb testing.TB, e *env, sink Sink) *Pipeline {
	tb.Helper()
	c, err := lipsync.NewONNX(e.model, inference.ContextOptions{Batch: 1, IntraOpThreads: 1})
	if err != nil {
		tb.Fatal(err)
	}
	p, err := New(Options{Avatar: e.pack, Model: c, TTS: e.tts, Sink: sink})
	if err != nil {
		_ = c.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// speech is espeak's sentence at 16 kHz.
func speech(tb testing.TB, e *env) []byte {
	tb.Helper()
	a, err := e.tts.Synthesize(context.Background(), sentence, "")
	if err != nil {
		tb.Fatal(err)
	}
	return wav.Encode16(a.Samples, SampleRate)
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op since start (all threads: the
// encoders' and ONNX Runtime's included).
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N)/1e6, "cpu-ms/op")
}

// fill keeps at least d of speech queued.
func fill(tb testing.TB, p *Pipeline, w []byte, d time.Duration) {
	for p.Status().Queued < d {
		if err := p.PushAudio(w, false); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkStepSpeaking is the CPU cost of one 40 ms tick while speaking:
// mel, inference (default model, one thread), composite, VP8, resampling
// and two Opus frames.
func BenchmarkStepSpeaking(b *testing.B) {
	e := newEnv(b)
	p := newStepper(b, e, discard{})
	w := speech(b, e)
	fill(b, p, w, 10*time.Second)
	inferred := 0
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		if p.Status().Queued < 5*time.Second {
			b.StopTimer()
			fill(b, p, w, 10*time.Second)
			b.StartTimer()
		}
		if err := p.step(); err != nil {
			b.Fatal(err)
		}
		if p.media.inferred.Load() {
			inferred++
		}
	}
	reportCPU(b, cpu)
	b.ReportMetric(float64(inferred)/float64(b.N), "inferred/op")
}

// BenchmarkStepIdle is one tick of silence: no inference.
func BenchmarkStepIdle(b *testing.B) {
	e := newEnv(b)
	p := newStepper(b, e, discard{})
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		if err := p.step(); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// TestStepAllocations checks that a speaking tick allocates only what the
// encoders do (their packets and cgo plumbing): a handful of objects.
func TestStepAllocations(t *testing.T) {
	e := newEnv(t)
	p := newStepper(t, e, discard{})
	fill(t, p, speech(t, e), 10*time.Second)
	for range 30 { // warm up: buffers reach their steady size
		if err := p.step(); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(50, func() {
		if err := p.step(); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%.1f allocations per speaking tick", allocs)
	if allocs > 40 {
		t.Errorf("%.1f allocations per tick", allocs)
	}
}

// TestRequestKeyframe: the frame after RequestKeyframe is a keyframe.
func TestRequestKeyframe(t *testing.T) {
	e := newEnv(t)
	rec := &recorder{}
	p := newStepper(t, e, rec)
	for i := range 10 {
		if i == 6 {
			p.RequestKeyframe()
		}
		if err := p.step(); err != nil {
			t.Fatal(err)
		}
	}
	video, _ := rec.samples()
	for i, s := range video {
		if want := i == 0 || i == 6; s.Keyframe != want {
			t.Errorf("frame %d keyframe %v, want %v", i, s.Keyframe, want)
		}
	}
}
