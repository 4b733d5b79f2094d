package pipeline

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
)

// tone16k is d of a 220 Hz tone at 16 kHz, amplitude a.
func tone16k(d time.Duration, a float64) []float32 {
	s := make([]float32, int(d/time.Millisecond)*SampleRate/1000)
	for i := range s {
		s[i] = float32(a * math.Sin(2*math.Pi*220*float64(i)/SampleRate))
	}
	return s
}

// TestPushPCM streams live audio in 20 ms chunks, the way a WHIP publisher
// does: silence is queued but gated (no inference), a loud stretch drives
// the model, queued speech is not interrupted, the queue bound holds, and a
// closed pipeline refuses more.
func TestPushPCM(t *testing.T) {
	e := newEnv(t)
	var observed atomic.Uint64
	h := e.start(t, func(o *Options) {
		o.MaxQueue = 2 * time.Second
		o.ObserveInference = func(d time.Duration) {
			if d <= 0 {
				t.Errorf("inference took %v", d)
			}
			observed.Add(1)
		}
	})
	const chunk = SampleRate / 50 // 20 ms
	silence := make([]float32, chunk)
	// One tick takes 40 ms: push two 20 ms chunks per tick, as live.
	for range h.d + 4 {
		for range 2 {
			if err := h.p.PushPCM(silence); err != nil {
				t.Fatal(err)
			}
		}
		h.tick(t, 1)
	}
	h.tick(t, h.d+2)
	if st := h.p.Status(); st.Inferred != 0 || st.Queued != 0 {
		t.Fatalf("silent stream: %+v, want no inference and an empty queue", st)
	}

	loud := tone16k(400*time.Millisecond, 0.3)
	for i := 0; i < len(loud); i += chunk {
		if err := h.p.PushPCM(loud[i : i+chunk]); err != nil {
			t.Fatal(err)
		}
	}
	if q := h.p.Status().Queued; q != 400*time.Millisecond {
		t.Fatalf("queued %v after 400 ms of chunks, want 400ms", q)
	}
	h.tick(t, 10+h.d)
	st := h.p.Status()
	if st.Inferred == 0 || observed.Load() != st.Inferred {
		t.Fatalf("loud stream: %+v, observer saw %d runs", st, observed.Load())
	}

	// Live audio goes after queued speech, without interrupting it.
	if err := h.p.PushAudio(wav.Encode16(tone16k(time.Second, 0.3), SampleRate), false); err != nil {
		t.Fatal(err)
	}
	if err := h.p.PushPCM(tone16k(500*time.Millisecond, 0.3)); err != nil {
		t.Fatal(err)
	}
	if q := h.p.Status().Queued; q != 1500*time.Millisecond {
		t.Fatalf("queued %v, want 1.5s (speech kept, live appended)", q)
	}
	// Over the bound: what fits is queued, the rest dropped.
	if err := h.p.PushPCM(tone16k(time.Second, 0.3)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("push past the bound: %v, want ErrQueueFull", err)
	}
	if q := h.p.Status().Queued; q != 2*time.Second {
		t.Fatalf("queued %v, want the 2s bound", q)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := h.p.PushPCM(silence); !errors.Is(err, ErrClosed) {
		t.Fatalf("push after Run ended: %v, want ErrClosed", err)
	}
}

// TestPushPCMMarked: a marked push's mark fires once its last sample has
// been written to the sink, in push order and a tick apart per 640
// samples; an interrupt drops the marks of what it drops.
func TestPushPCMMarked(t *testing.T) {
	e := newEnv(t)
	h := e.start(t, nil)
	var mu sync.Mutex
	fired := map[string]int{} // mark → tick it fired after
	mark := func(name string) func() {
		return func() {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := fired[name]; dup {
				t.Errorf("mark %s fired twice", name)
			}
			_, audio := h.sink.samples()
			fired[name] = len(audio) / 2
		}
	}
	get := func(name string) (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		n, ok := fired[name]
		return n, ok
	}
	// a: 160 samples, taken by the first tick; b: 1600 more, the last
	// taken by the third (640 + 640 + 480).
	tone := tone16k(110*time.Millisecond, 0.3)
	if err := h.p.PushPCMMarked(tone[:160], mark("a")); err != nil {
		t.Fatal(err)
	}
	if err := h.p.PushPCMMarked(tone[160:1760], mark("b")); err != nil {
		t.Fatal(err)
	}
	h.tick(t, 1)
	if _, ok := get("a"); ok {
		t.Fatal("a fired before its samples went through the delay line")
	}
	for i := 0; i < 40; i++ {
		if _, ok := get("b"); ok {
			break
		}
		h.tick(t, 1)
	}
	ta, oka := get("a")
	tb, okb := get("b")
	if !oka || !okb || tb-ta != 2 || ta < 2 {
		t.Fatalf("a fired after tick %d (%v), b after %d (%v): want both, b two ticks after a", ta, oka, tb, okb)
	}
	// c is dropped by the interrupt with its samples: it never fires.
	if err := h.p.PushPCMMarked(tone16k(time.Second, 0.3), mark("c")); err != nil {
		t.Fatal(err)
	}
	h.tick(t, 2)
	h.p.Interrupt()
	h.tick(t, 40)
	if _, ok := get("c"); ok {
		t.Error("the mark of interrupted speech fired")
	}
}
