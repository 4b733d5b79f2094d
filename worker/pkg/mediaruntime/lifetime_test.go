package mediaruntime

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// lifeClock is a settable lifetime clock; check runs one lifetime check
// and returns once it has finished.
type lifeClock struct {
	t     *testing.T
	mu    sync.Mutex
	now   time.Time
	ticks *pipeline.ManualClock
}

func newLifeClock(t *testing.T) *lifeClock {
	return &lifeClock{t: t, now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), ticks: pipeline.NewManualClock()}
}

func (c *lifeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// at sets the clock to t0+d.
func (c *lifeClock) at(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Add(d)
}

// check runs one lifetime check to completion: the second tick is taken
// only once the first check is done.
func (c *lifeClock) check() {
	c.t.Helper()
	for range 2 {
		select {
		case c.ticks.Ticks() <- time.Time{}:
		case <-time.After(10 * time.Second):
			c.t.Fatal("lifetime check took no tick")
		}
	}
}

// lifetimeRuntime is a runtime on a manual lifetime clock whose sessions'
// transports are sinks (kept by session id).
func lifetimeRuntime(t *testing.T, slots uint32) (*Runtime, *lifeClock, func(id string) *sink) {
	t.Helper()
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	clock := newLifeClock(t)
	var mu sync.Mutex
	sinks := map[string]*sink{}
	r, err := New(Config{
		Devices: []*fleetv1.GPU{{Index: 0, Slots: slots}},
		Model:   newModel(t),
		Avatar:  func(string) (*avatar.Pack, error) { return pack, nil },
		Media: func(s *fleetv1.Session, h MediaHooks) (Media, error) {
			mu.Lock()
			defer mu.Unlock()
			sinks[s.GetId()] = &sink{hooks: h}
			return sinks[s.GetId()], nil
		},
		Clock:         func(*fleetv1.Session) pipeline.Clock { return pipeline.NewManualClock() },
		Now:           clock.Now,
		LifetimeClock: clock.ticks,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return r, clock, func(id string) *sink {
		mu.Lock()
		defer mu.Unlock()
		return sinks[id]
	}
}

// expectEnded takes the next Ended report, which must be id's with reason.
func expectEnded(t *testing.T, r *Runtime, id string, reason fleetv1.EndReason) {
	t.Helper()
	select {
	case e := <-r.Ended():
		if e.SessionID != id || e.Reason != reason || e.State != fleetv1.SessionState_SESSION_STATE_ENDED || e.Message == "" {
			t.Fatalf("ended %+v, want %s with %s", e, id, reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not reported ended (%s)", id, reason)
	}
}

func expectNoneEnded(t *testing.T, r *Runtime) {
	t.Helper()
	select {
	case e := <-r.Ended():
		t.Fatalf("unexpected end %+v", e)
	default:
	}
}

func toneWAV() []byte {
	s := make([]float32, 8000)
	for i := range s {
		s[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/16000))
	}
	return wav.Encode16(s, 16000)
}

// TestLifetimes: idle timeout (no viewer ever, speech resets the clock),
// viewer gone (a present viewer keeps the session alive however long; the
// clock runs from the last one leaving), max duration (even with a viewer),
// and the defaults of a record with no limits.
func TestLifetimes(t *testing.T) {
	r, clock, media := lifetimeRuntime(t, 4)
	ctx := context.Background()
	for i, s := range []*fleetv1.Session{
		{Id: "idle", IdleTimeoutSeconds: 5},
		{Id: "watched", IdleTimeoutSeconds: 5},
		{Id: "long", IdleTimeoutSeconds: 5, MaxDurationSeconds: 10},
		{Id: "defaults"},
	} {
		s.Slot = uint32(i)
		if err := r.Start(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	media("watched").hooks.ViewersChanged(1)
	media("long").hooks.ViewersChanged(2)

	clock.at(4 * time.Second)
	if err := r.PushAudio(ctx, "idle", toneWAV(), false); err != nil { // activity at 4 s
		t.Fatal(err)
	}
	if err := r.Interrupt(ctx, "idle"); err != nil { // nothing left queued
		t.Fatal(err)
	}
	clock.check()
	clock.at(8 * time.Second)
	clock.check()
	expectNoneEnded(t, r)

	clock.at(9 * time.Second) // 5 s after the speech, no viewer ever
	clock.check()
	expectEnded(t, r, "idle", fleetv1.EndReason_END_REASON_IDLE_TIMEOUT)

	clock.at(10 * time.Second) // long's maximum, viewers or not
	clock.check()
	expectEnded(t, r, "long", fleetv1.EndReason_END_REASON_MAX_DURATION)

	clock.at(100 * time.Second) // watched: a viewer is there, so no idle end
	clock.check()
	expectNoneEnded(t, r)
	media("watched").hooks.ViewersChanged(0) // the last viewer leaves at 100 s
	clock.at(104 * time.Second)
	clock.check()
	expectNoneEnded(t, r)
	clock.at(105 * time.Second)
	clock.check()
	expectEnded(t, r, "watched", fleetv1.EndReason_END_REASON_VIEWER_GONE)

	clock.at(DefaultIdleTimeout - time.Second)
	clock.check()
	expectNoneEnded(t, r)
	clock.at(DefaultIdleTimeout)
	clock.check()
	expectEnded(t, r, "defaults", fleetv1.EndReason_END_REASON_IDLE_TIMEOUT)

	if got := r.Sessions(); len(got) != 0 {
		t.Fatalf("sessions left: %v", got)
	}
	// The transports are closed, and late hooks are harmless.
	for _, id := range []string{"idle", "watched", "long", "defaults"} {
		m := media(id)
		deadline := time.Now().Add(10 * time.Second)
		for m.closes() != 1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := m.closes(); n != 1 {
			t.Errorf("%s: media closed %d times", id, n)
		}
		m.hooks.PushPCM(make([]float32, 320))
		m.hooks.RequestKeyframe()
		m.hooks.ViewersChanged(3)
	}
	if err := r.Stop(ctx, "idle", fleetv1.EndReason_END_REASON_DELETED); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("stop of an ended session: %v", err)
	}
	// The slots are free again.
	if err := r.Start(ctx, &fleetv1.Session{Id: "next", Slot: 0}); err != nil {
		t.Fatal(err)
	}
}

// TestLiveAudioKeepsAlive: live microphone audio through the transport's
// hook is speech activity, and a session whose avatar is still speaking
// (queued speech) is not idle.
func TestLiveAudioKeepsAlive(t *testing.T) {
	r, clock, media := lifetimeRuntime(t, 2)
	ctx := context.Background()
	if err := r.Start(ctx, &fleetv1.Session{Id: "mic", IdleTimeoutSeconds: 5}); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, &fleetv1.Session{Id: "talker", Slot: 1, IdleTimeoutSeconds: 5}); err != nil {
		t.Fatal(err)
	}
	// talker's speech stays queued (its media clock never ticks).
	if err := r.PushAudio(ctx, "talker", toneWAV(), false); err != nil {
		t.Fatal(err)
	}
	for sec := 1; sec <= 12; sec++ {
		clock.at(time.Duration(sec) * time.Second)
		media("mic").hooks.PushPCM(make([]float32, 16000)) // a second of (silent) live audio
		if err := r.Interrupt(ctx, "mic"); err != nil {    // keep the queue short
			t.Fatal(err)
		}
		clock.check()
	}
	expectNoneEnded(t, r)
	if got := r.Sessions(); !slices.Equal(got, []string{"mic", "talker"}) {
		t.Fatalf("sessions %v", got)
	}
	if err := r.PushPCM("mic", make([]float32, 320)); err != nil {
		t.Fatal(err)
	}
	if err := r.Interrupt(ctx, "mic"); err != nil {
		t.Fatal(err)
	}
	if err := r.PushPCM("nobody", nil); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("PushPCM to a missing session: %v", err)
	}
	clock.at(17 * time.Second) // 5 s after the last live audio
	clock.check()
	expectEnded(t, r, "mic", fleetv1.EndReason_END_REASON_IDLE_TIMEOUT)
	if got := r.Sessions(); !slices.Equal(got, []string{"talker"}) {
		t.Fatalf("sessions %v, want the one still speaking", got)
	}
}
