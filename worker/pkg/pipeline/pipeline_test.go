package pipeline

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
)

const sentence = "Hello, this is a test of the avatar"

// TestSpeakLipSync speaks a sentence through espeak-ng, the default model
// and the real encoders, and checks the clock, the sync and the mouth, and
// that the synthesis latency was reported once.
func TestSpeakLipSync(t *testing.T) {
	e := newEnv(t)
	var synth []time.Duration
	var synthMu sync.Mutex
	h := e.start(t, func(o *Options) {
		o.ObserveSynthesis = func(d time.Duration) { synthMu.Lock(); synth = append(synth, d); synthMu.Unlock() }
	})
	const idleBefore = 10
	h.tick(t, idleBefore)
	began := time.Now()
	if err := h.p.Speak(sentence, false); err != nil {
		t.Fatal(err)
	}
	queued := h.waitSynthesized(t)
	synthMu.Lock()
	if len(synth) != 1 || synth[0] <= 0 || synth[0] > time.Since(began) {
		t.Errorf("synthesis latencies %v, want one in (0, %v]", synth, time.Since(began))
	}
	synthMu.Unlock()
	speechTicks := int((queued + FrameDuration - 1) / FrameDuration)
	const idleAfter = 15
	total := idleBefore + speechTicks + h.d + idleAfter
	h.tick(t, total-idleBefore)
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}

	video, audio := h.sink.samples()
	if len(video) != total || len(audio) != 2*total {
		t.Fatalf("%d video, %d audio samples after %d ticks; want %d, %d", len(video), len(audio), total, total, 2*total)
	}
	for i, s := range video {
		if want := time.Duration(i) * 40 * time.Millisecond; s.Timestamp != want || s.Duration != FrameDuration {
			t.Fatalf("video %d at %v for %v, want %v for 40ms", i, s.Timestamp, s.Duration, want)
		}
	}
	for i, s := range audio {
		if want := time.Duration(i) * 20 * time.Millisecond; s.Timestamp != want || s.Duration != AudioFrameDuration {
			t.Fatalf("audio %d at %v for %v, want %v for 20ms", i, s.Timestamp, s.Duration, want)
		}
		if d := s.Timestamp - video[i/2].Timestamp; d < 0 || d > FrameDuration {
			t.Fatalf("audio %d is %v from its video frame", i, d)
		}
	}
	if !video[0].Keyframe {
		t.Error("first frame is not a keyframe")
	}

	// Speech occupies ticks idleBefore+h.d .. +speechTicks.
	first := idleBefore + h.d
	last := first + speechTicks - 1
	frames := decodeAll(t, video, e.pack.Width(), e.pack.Height())
	var idleMax, speechMax, speechSum float64
	var speechN int
	for n, img := range frames {
		ref, box := e.pack.Frame(max(n-h.d, 0))
		d := mouthDiff(img, ref, box)
		switch {
		case n < idleBefore || n > last+h.d+1:
			idleMax = max(idleMax, d)
		case n >= first && n <= last:
			speechMax = max(speechMax, d)
			speechSum += d
			speechN++
		}
	}
	t.Logf("speech %v (%d ticks); mouth diff: idle max %.2f, speech mean %.2f max %.2f",
		queued, speechTicks, idleMax, speechSum/float64(speechN), speechMax)
	if idleMax > 2.5 {
		t.Errorf("idle frames differ from the avatar by %.2f in the mouth region", idleMax)
	}
	if speechMax < 3*idleMax || speechMax < 4 {
		t.Errorf("the mouth barely moves while speaking: max %.2f (idle %.2f)", speechMax, idleMax)
	}

	// Opus packets of speech are much larger than those of silence.
	var silent, loud int
	for i, s := range audio {
		switch tick := i / 2; {
		case tick >= 2 && tick < idleBefore:
			silent += len(s.Data)
		case tick >= first+2 && tick <= last-2:
			loud += len(s.Data)
		}
	}
	silent /= 2 * (idleBefore - 2)
	loud /= 2 * (speechTicks - 3)
	t.Logf("Opus packets: speech %d bytes on average, silence %d", loud, silent)
	if 2*loud < 3*silent {
		t.Errorf("speech audio packets average %d bytes, silence %d", loud, silent)
	}

	h.mu.Lock()
	events := append([]Event(nil), h.events...)
	h.mu.Unlock()
	if len(events) != 2 || events[0].Kind != SpeakingStarted || events[1].Kind != SpeakingEnded {
		t.Fatalf("events %v, want started, ended", events)
	}
	if got, want := events[0].Timestamp, time.Duration(first)*FrameDuration; got != want {
		t.Errorf("speaking started at %v, want %v", got, want)
	}
}

// TestInterrupt interrupts speech: the very next frame is idle and the
// audio silent from then on.
func TestInterrupt(t *testing.T) {
	e := newEnv(t)
	h := e.start(t, nil)
	if err := h.p.Speak(sentence, false); err != nil {
		t.Fatal(err)
	}
	h.waitSynthesized(t)
	h.tick(t, h.d+10)
	if !h.p.media.inferred.Load() || !h.p.Status().Speaking {
		t.Fatal("not speaking 10 frames into the sentence")
	}
	h.p.Interrupt()
	if st := h.p.Status(); st.Queued != 0 || st.Synthesizing {
		t.Fatalf("after Interrupt: %+v", st)
	}
	for i := range 2 * h.d {
		h.tick(t, 1)
		if h.p.media.inferred.Load() {
			t.Fatalf("frame %d after Interrupt came from the model", i)
		}
	}
	_, audio := h.sink.samples()
	var speech int
	for _, s := range audio[2*h.d+2 : 2*h.d+18] {
		speech = max(speech, len(s.Data))
	}
	for i, s := range audio[len(audio)-4*h.d+1:] {
		if 3*len(s.Data) > 2*speech {
			t.Errorf("audio packet %d after Interrupt has %d bytes (speech up to %d)", i, len(s.Data), speech)
		}
	}
	if h.p.Status().Speaking {
		t.Error("still speaking")
	}

	// Interrupting with new speech: the frames of the dropped speech stay
	// idle, the new speech drives the model once its own frames come up.
	if err := h.p.PushAudio(wav.Encode16(tone(SampleRate), SampleRate), false); err != nil {
		t.Fatal(err)
	}
	h.tick(t, h.d+4)
	if !h.p.media.inferred.Load() {
		t.Fatal("the tone does not drive the model")
	}
	if err := h.p.PushAudio(wav.Encode16(tone(SampleRate), SampleRate), true); err != nil {
		t.Fatal(err)
	}
	for i := range h.d + 2 {
		h.tick(t, 1)
		if got, want := h.p.media.inferred.Load(), i >= h.d; got != want {
			t.Errorf("frame %d after the interrupting push: inferred %v, want %v", i, got, want)
		}
	}
}

// tone is n samples of a 220 Hz tone at 16 kHz.
func tone(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/SampleRate))
	}
	return s
}

// TestPushAudio: a bad WAV is refused and the pipeline goes on; a good one
// at another rate is resampled and queued; an oversized one is refused.
func TestPushAudio(t *testing.T) {
	e := newEnv(t)
	h := e.start(t, func(o *Options) { o.MaxQueue = 2 * time.Second })
	if err := h.p.PushAudio([]byte("RIFF....WAVEjunk"), false); !errors.Is(err, ErrBadAudio) {
		t.Fatalf("bad WAV: %v, want ErrBadAudio", err)
	}
	h.tick(t, 3)
	tone := make([]float32, 22050) // 1 s at 22.05 kHz
	for i := range tone {
		tone[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/22050))
	}
	if err := h.p.PushAudio(wav.Encode16(tone, 22050), false); err != nil {
		t.Fatal(err)
	}
	if q := h.p.Status().Queued; q < 990*time.Millisecond || q > 1010*time.Millisecond {
		t.Fatalf("queued %v, want 1s", q)
	}
	if err := h.p.PushAudio(wav.Encode16(append(tone, tone...), 22050), false); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("3 s into a 2 s queue: %v, want ErrQueueFull", err)
	}
	if err := h.p.PushAudio(wav.Encode16(tone[:11025], 22050), true); err != nil {
		t.Fatal(err)
	}
	if q := h.p.Status().Queued; q > 510*time.Millisecond {
		t.Fatalf("interrupting push left %v queued", q)
	}
	h.tick(t, h.d+2)
	if !h.p.media.inferred.Load() {
		t.Error("tone did not drive the model")
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestPanicEndsOnlyItsPipeline injects a panic into one of two pipelines.
func TestPanicEndsOnlyItsPipeline(t *testing.T) {
	e := newEnv(t)
	bad := e.start(t, func(o *Options) {
		o.tickHook = func(n int64) {
			if n == 3 {
				panic("injected")
			}
		}
	})
	good := e.start(t, nil)
	var err error
	ticks := 0
	for i := 0; err == nil && i < 10; i++ {
		good.tick(t, 1)
		ticks++
		select {
		case bad.clock.Ticks() <- time.Time{}:
		case err = <-bad.done:
		}
	}
	if err == nil {
		select {
		case err = <-bad.done:
		case <-time.After(10 * time.Second):
		}
	}
	bad.cancel = nil
	if err == nil || !strings.Contains(err.Error(), "panic") || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Run of the panicking pipeline: %v", err)
	}
	good.tick(t, 5)
	if f := good.p.Status().Frames; f != uint64(ticks+5) {
		t.Errorf("the other pipeline sent %d frames", f)
	}
	if err := good.stop(t); err != nil {
		t.Errorf("the other pipeline: %v", err)
	}
}

// TestRealClock runs on the wall clock for a moment: about 25 frames a
// second, and Run returns nil when its context ends.
func TestRealClock(t *testing.T) {
	e := newEnv(t)
	rec := &recorder{}
	p := newStepper(t, e, rec)
	p.opt.Clock = RealClock{}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	video, audio := rec.samples()
	if len(video) < 4 || len(video) > 13 || len(audio) != 2*len(video) {
		t.Errorf("%d video and %d audio samples in 0.5 s", len(video), len(audio))
	}
	if err := p.Speak(sentence, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Speak after Run: %v, want ErrClosed", err)
	}
}

// TestCatchUp: after a stall the pipeline sends the frames the wall clock
// says are due (up to a bound), so media time keeps up with wall time, and
// reports the frames it sent late or skipped, and every encode.
func TestCatchUp(t *testing.T) {
	e := newEnv(t)
	var late, skipped, encodes atomic.Int64
	h := e.start(t, func(o *Options) {
		o.ObserveLate = func(l, s int64) { late.Add(l); skipped.Add(s) }
		o.ObserveEncode = func(d time.Duration) {
			if d > 0 {
				encodes.Add(1)
			}
		}
	})
	t0 := time.Unix(1000, 0)
	send := func(at time.Duration) {
		t.Helper()
		select {
		case h.clock.Ticks() <- t0.Add(at):
		case <-time.After(10 * time.Second):
			t.Fatal("tick not taken")
		}
	}
	wait := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for h.p.Status().Frames != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d frames, want %d", h.p.Status().Frames, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	send(0)
	wait(1)
	send(40 * time.Millisecond)
	wait(2)
	send(200 * time.Millisecond) // ticks 3..5 were dropped: frames 2..5 due
	wait(6)
	send(10 * time.Second) // a long stall: at most 1+maxCatchUp frames
	wait(6 + 1 + maxCatchUp)
	send(10*time.Second + 40*time.Millisecond) // and on from there
	wait(6 + 2 + maxCatchUp)
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	video, _ := h.sink.samples()
	for i, s := range video {
		if s.Timestamp != time.Duration(i)*FrameDuration {
			t.Fatalf("frame %d at %v", i, s.Timestamp)
		}
	}
	// Late: 3 frames after the short stall, maxCatchUp after the long one,
	// whose other 250−1−maxCatchUp due frames were skipped.
	if got, want := late.Load(), int64(3+maxCatchUp); got != want {
		t.Errorf("late frames %d, want %d", got, want)
	}
	if got, want := skipped.Load(), int64(10*time.Second/FrameDuration-5-1-maxCatchUp); got != want {
		t.Errorf("skipped frames %d, want %d", got, want)
	}
	if got := encodes.Load(); got != int64(len(video)) {
		t.Errorf("%d encodes observed, %d frames sent", got, len(video))
	}
}
