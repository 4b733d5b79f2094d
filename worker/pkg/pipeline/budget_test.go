package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/resample"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// hostileWAV is n bytes of 8-bit mono audio whose header says rate Hz and,
// when dataSize is not 0, that many bytes of data.
func hostileWAV(rate uint32, n int, dataSize uint32) []byte {
	b := wav.Encode16(nil, 8000)
	le := binary.LittleEndian
	le.PutUint32(b[24:], rate)
	le.PutUint32(b[28:], rate)
	le.PutUint16(b[32:], 1) // block align
	le.PutUint16(b[34:], 8) // bits
	if dataSize == 0 {
		dataSize = uint32(n)
	}
	le.PutUint32(b[40:], dataSize)
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(128 + 60*math.Sin(float64(i)/3))
	}
	return append(b, data...)
}

// TestPushAudioHostileHeaders: the attacks of issue 8 are refused from the
// header, with ErrBadAudio, before anything is decoded or resampled; the
// pipeline holds nothing afterwards and goes on.
func TestPushAudioHostileHeaders(t *testing.T) {
	e := newEnv(t)
	budget := NewBudget(0)
	h := e.start(t, func(o *Options) { o.Budget = budget })
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		// 1 MB claiming 1 Hz: resampling it to 16 kHz took 64 GB.
		{"1 Hz", hostileWAV(1, 1<<20, 0), "sample rate 1 Hz"},
		{"7999 Hz", hostileWAV(7999, 1000, 0), "sample rate 7999 Hz"},
		{"2^31 samples", hostileWAV(8000, 1000, 1<<31), "limit 10m0s"},
		{"just over the queue", hostileWAV(8000, 1000, 8000*600+1), "limit 10m0s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := h.p.PushAudio(c.b, false)
			if !errors.Is(err, ErrBadAudio) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("PushAudio: %v, want ErrBadAudio saying %q", err, c.want)
			}
			if st := h.p.Status(); st.Queued != 0 || st.Buffered != 0 || budget.Used() != 0 {
				t.Fatalf("after a refused file: %+v, budget %v", st, budget)
			}
		})
	}
	h.tick(t, 3)
	if err := h.p.PushAudio(hostileWAV(8000, 8000, 0), false); err != nil {
		t.Fatalf("a good 8 kHz file after the attacks: %v", err)
	}
	if q := h.p.Status().Queued; q != time.Second {
		t.Errorf("queued %v, want 1s", q)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestPushAudioChunkedMatchesWhole: the chunked decode and resample queues
// exactly what decoding the whole file and resampling it in one go gives.
func TestPushAudioChunkedMatchesWhole(t *testing.T) {
	e := newEnv(t)
	for _, rate := range []int{8000, 22050, 44100, 48000} {
		x := make([]float32, rate*3/2+17)
		for i := range x {
			x[i] = float32(0.4*math.Sin(2*math.Pi*330*float64(i)/float64(rate)) + 0.1*math.Sin(float64(i)))
		}
		b := wav.Encode16(x, rate)
		a, err := wav.Parse(b, wav.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want, err := resample.Resample(a.Samples, rate, SampleRate)
		if err != nil {
			t.Fatal(err)
		}
		h := e.start(t, nil)
		if err := h.p.PushAudio(b, false); err != nil {
			t.Fatal(err)
		}
		h.p.input.mu.Lock()
		got := append([]float32(nil), h.p.input.pcm[h.p.input.head:]...)
		h.p.input.mu.Unlock()
		if len(got) != len(want) {
			t.Fatalf("%d Hz: queued %d samples, want %d", rate, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%d Hz: sample %d = %v, want %v", rate, i, got[i], want[i])
			}
		}
		if err := h.stop(t); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBudget: two pipelines share a budget; input that does not fit is
// refused with ErrOverBudget before it is queued, bytes come back as the
// queue drains or is interrupted, pending text is bounded, and closing a
// pipeline gives back all it held.
func TestBudget(t *testing.T) {
	e := newEnv(t)
	const second = 4 * SampleRate // bytes of one second of queued speech
	budget := NewBudget(3 * second)
	a := e.start(t, func(o *Options) { o.Budget = budget; o.MaxPendingText = 100 })
	b := e.start(t, func(o *Options) { o.Budget = budget })
	tone := func(d time.Duration) []byte {
		return wav.Encode16(make([]float32, int(d/time.Millisecond)*16), SampleRate)
	}

	if err := a.p.PushAudio(tone(2*time.Second), false); err != nil {
		t.Fatal(err)
	}
	if got := a.p.Buffered(); got != 2*second || budget.Used() != 2*second {
		t.Fatalf("a holds %d bytes, budget %v; want %d", got, budget, 2*second)
	}
	if err := b.p.PushAudio(tone(2*time.Second), false); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("b's 2 s over the budget: %v, want ErrOverBudget", err)
	}
	if b.p.Buffered() != 0 || budget.Used() != 2*second {
		t.Fatalf("a refused push left b %d bytes, budget %v", b.p.Buffered(), budget)
	}
	if err := b.p.PushAudio(tone(time.Second), false); err != nil {
		t.Fatalf("b's 1 s fits: %v", err)
	}
	if err := b.p.Speak("hello", false); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("text with the budget full: %v, want ErrOverBudget", err)
	}
	// Ticks drain a's queue and give its bytes back.
	a.tick(t, 25)
	if got, want := a.p.Buffered(), int64(second); got != want || budget.Used() != 2*second {
		t.Fatalf("after 1 s of ticks a holds %d bytes (want %d), budget %v", got, want, budget)
	}
	a.p.Interrupt()
	if a.p.Buffered() != 0 || budget.Used() != second {
		t.Fatalf("after Interrupt a holds %d, budget %v", a.p.Buffered(), budget)
	}
	if budget.Over() {
		t.Fatalf("budget over: %v", budget)
	}
	if err := b.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := b.p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := a.p.Close(); err != nil {
		t.Fatal(err)
	}
	if budget.Used() != 0 {
		t.Fatalf("closed pipelines still hold %v", budget)
	}
}

// TestPendingText: text waiting for synthesis is bounded by MaxPendingText
// and counted in the budget (a pipeline that is not running holds its
// texts).
func TestPendingText(t *testing.T) {
	budget := NewBudget(150)
	p := &Pipeline{opt: Options{TTS: stubTTS{}}}
	p.input.init(SampleRate, SampleRate, 100, budget)
	if err := p.Speak(strings.Repeat("a", 60), false); err != nil {
		t.Fatal(err)
	}
	if err := p.Speak(strings.Repeat("b", 41), false); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("101 bytes pending: %v, want ErrQueueFull", err)
	}
	if err := p.Speak(strings.Repeat("b", 40), false); err != nil {
		t.Fatalf("100 bytes pending: %v", err)
	}
	if p.Buffered() != 100 || budget.Used() != 100 {
		t.Fatalf("holds %d, budget %v; want 100", p.Buffered(), budget)
	}
	q := &Pipeline{opt: Options{TTS: stubTTS{}}}
	q.input.init(SampleRate, SampleRate, 100, budget)
	if err := q.Speak(strings.Repeat("c", 51), false); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("text past the shared budget: %v, want ErrOverBudget", err)
	}
	if err := p.Speak("x", true); err != nil { // interrupt drops the pending texts
		t.Fatal(err)
	}
	if p.Buffered() != 1 || budget.Used() != 1 {
		t.Fatalf("after an interrupting Speak: holds %d, budget %v", p.Buffered(), budget)
	}
	p.input.close()
	if budget.Used() != 0 {
		t.Fatalf("closed: budget %v", budget)
	}
}

type stubTTS struct{}

func (stubTTS) Synthesize(context.Context, string, string) (tts.Audio, error) {
	return tts.Audio{}, nil
}

// TestPushPCMLiveBound: live audio is queued only while less than MaxLive
// of speech waits.
func TestPushPCMLiveBound(t *testing.T) {
	e := newEnv(t)
	h := e.start(t, func(o *Options) { o.MaxLive = time.Second })
	chunk := make([]float32, 320)
	var refused int
	for range 100 { // 2 s sent at once, faster than real time
		if err := h.p.PushPCM(chunk); errors.Is(err, ErrQueueFull) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if q := h.p.Status().Queued; q != time.Second || refused != 50 {
		t.Fatalf("queued %v, %d chunks refused; want 1s and 50", q, refused)
	}
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
}
