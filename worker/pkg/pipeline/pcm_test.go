package pipeline

import (
	"errors"
	"math"
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
