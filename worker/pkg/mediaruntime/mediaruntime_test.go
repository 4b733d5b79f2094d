package mediaruntime

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference/inferencetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// defaultPack builds the default avatar once for the whole test binary.
var defaultPack = sync.OnceValues(avatar.Default)

// sink is a Media that counts frames; a breaking one panics on its third
// video frame. It keeps the hooks it was opened with.
type sink struct {
	mu       sync.Mutex
	frames   int
	breaking bool
	closed   int
	hooks    MediaHooks
}

func (s *sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed++
	return nil
}

func (s *sink) closes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *sink) WriteVideo(pipeline.Sample) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames++
	if s.breaking && s.frames == 3 {
		panic("sink exploded")
	}
	return nil
}

func (s *sink) WriteAudio(pipeline.Sample) error { return nil }

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frames
}

func newModel(t testing.TB) *inference.Model {
	t.Helper()
	return inferencetest.Default(t)
}

// loadModel loads a generated model on a runtime closed with the test.
func loadModel(t testing.TB, name string, gen func() ([]byte, error)) *inference.Model {
	t.Helper()
	return inferencetest.Load(t, name, gen, inference.RuntimeOptions{})
}

// TestOneSessionBreaks runs three sessions; one's pipeline panics: it alone
// ends, reported on Ended with END_REASON_ERROR.
func TestOneSessionBreaks(t *testing.T) {
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	sinks := map[string]*sink{}
	clocks := map[string]*pipeline.ManualClock{}
	r, err := New(Config{
		Devices: []*fleetv1.GPU{{Index: 0, Slots: 3}},
		Model:   newModel(t),
		Prewarm: 2,
		Avatar:  func(string) (*avatar.Pack, error) { return pack, nil },
		Media: func(s *fleetv1.Session, h MediaHooks) (Media, error) {
			mu.Lock()
			defer mu.Unlock()
			sinks[s.GetId()] = &sink{breaking: s.GetId() == "b", hooks: h}
			return sinks[s.GetId()], nil
		},
		Clock: func(s *fleetv1.Session) pipeline.Clock {
			mu.Lock()
			defer mu.Unlock()
			clocks[s.GetId()] = pipeline.NewManualClock()
			return clocks[s.GetId()]
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, id := range []string{"a", "b", "c"} {
		if err := r.Start(ctx, &fleetv1.Session{Id: id, Gpu: 0, Slot: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Start(ctx, &fleetv1.Session{Id: "a", Gpu: 0, Slot: 0}); err != nil {
		t.Errorf("retried start: %v", err)
	}
	if err := r.Start(ctx, &fleetv1.Session{Id: "d", Gpu: 0, Slot: 1}); !errors.Is(err, runtime.ErrSlotBusy) {
		t.Errorf("start on a busy slot: %v", err)
	}
	if err := r.Start(ctx, &fleetv1.Session{Id: "d", Gpu: 0, Slot: 7}); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Errorf("start on a missing slot: %v", err)
	}

	const ticks = 6
	for i := range ticks {
		for _, id := range []string{"a", "b", "c"} {
			if id == "b" && i >= 3 { // b's sink panics on its third frame
				continue
			}
			select {
			case clocks[id].Ticks() <- time.Time{}:
			case <-time.After(10 * time.Second):
				t.Fatalf("session %s took no tick", id)
			}
		}
	}
	select {
	case e := <-r.Ended():
		if e.SessionID != "b" || e.Reason != fleetv1.EndReason_END_REASON_ERROR || e.State != fleetv1.SessionState_SESSION_STATE_FAILED || !strings.Contains(e.Message, "sink exploded") {
			t.Errorf("ended %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the broken session was not reported")
	}
	if got := r.Sessions(); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("sessions %v, want [a c]", got)
	}
	if _, err := r.Status("b"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("status of the broken session: %v", err)
	}
	for _, id := range []string{"a", "c"} {
		deadline := time.Now().Add(10 * time.Second)
		st, err := r.Status(id)
		for err == nil && st.FramesSent < ticks && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			st, err = r.Status(id)
		}
		if err != nil || st.FramesSent != ticks || sinks[id].count() != ticks || st.State != fleetv1.SessionState_SESSION_STATE_READY {
			t.Errorf("session %s: %+v, %v; want %d frames", id, st, err, ticks)
		}
	}
	// The slot of the broken session is free again.
	if err := r.Start(ctx, &fleetv1.Session{Id: "d", Gpu: 0, Slot: 1}); err != nil {
		t.Errorf("start on the freed slot: %v", err)
	}

	if err := r.PushAudio(ctx, "a", []byte("RIFF\x00\x00\x00\x00WAVEjunkjunkjunkjunkjunkjunkjunkjunk"), false); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Errorf("bad WAV: %v", err)
	}
	if err := r.Interrupt(ctx, "a"); err != nil {
		t.Error(err)
	}
	if err := r.Speak(ctx, "zz", "hello", false); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("speak to a missing session: %v", err)
	}
	if err := r.Stop(ctx, "a", fleetv1.EndReason_END_REASON_DELETED); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, "a", fleetv1.EndReason_END_REASON_DELETED); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("second stop: %v", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Every transport was closed once, whatever ended its session.
	for id, s := range sinks {
		if n := s.closes(); n != 1 {
			t.Errorf("session %s: media closed %d times", id, n)
		}
	}
	if _, ok := <-r.Ended(); ok {
		t.Error("Ended delivered after Close")
	}
	if err := r.Start(ctx, &fleetv1.Session{Id: "e", Gpu: 0, Slot: 0}); !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("start after Close: %v", err)
	}
}

// TestConcurrentStart: retried starts of one session racing each other all
// succeed and build one pipeline.
func TestConcurrentStart(t *testing.T) {
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	built := 0
	r, err := New(Config{
		Devices: []*fleetv1.GPU{{Index: 0, Slots: 2}},
		Model:   newModel(t),
		Avatar:  func(string) (*avatar.Pack, error) { return pack, nil },
		Media: func(*fleetv1.Session, MediaHooks) (Media, error) {
			mu.Lock()
			defer mu.Unlock()
			built++
			return &sink{}, nil
		},
		Clock: func(*fleetv1.Session) pipeline.Clock { return pipeline.NewManualClock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- r.Start(ctx, &fleetv1.Session{Id: "x", Gpu: 0, Slot: 1}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("start: %v", err)
		}
	}
	if got := r.Sessions(); !slices.Equal(got, []string{"x"}) || built != 1 {
		t.Errorf("sessions %v, %d pipelines built", got, built)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
