package mediaruntime

import (
	"context"
	"fmt"
	goruntime "runtime"
	"sync"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// frameMedia is a Media that signals its first video frame.
type frameMedia struct {
	first    chan pipeline.Sample
	mu       sync.Mutex
	frames   int
	closed   bool
	closedCh chan struct{}
}

func newFrameMedia() *frameMedia {
	return &frameMedia{first: make(chan pipeline.Sample, 1), closedCh: make(chan struct{})}
}

func (m *frameMedia) WriteVideo(s pipeline.Sample) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frames++
	if m.frames == 1 {
		m.first <- s
	}
	return nil
}

func (m *frameMedia) WriteAudio(pipeline.Sample) error { return nil }

func (m *frameMedia) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("closed twice")
	}
	m.closed = true
	close(m.closedCh)
	return nil
}

// churn is a runtime whose sessions run on manual media clocks and
// frameMedia transports, kept only while they run.
type churn struct {
	r      *Runtime
	mu     sync.Mutex
	clocks map[string]*pipeline.ManualClock
	media  map[string]*frameMedia
}

func newChurn(tb testing.TB, model *inference.Model, slots uint32, prewarm int) *churn {
	tb.Helper()
	c := newChurnOn(tb, model, slots, prewarm)
	tb.Cleanup(func() { c.close(tb) })
	return c
}

// newChurnUntimed is a one-slot churn the caller closes (benchmarks make
// one per iteration).
func newChurnUntimed(tb testing.TB, model *inference.Model, prewarm int) *churn {
	tb.Helper()
	return newChurnOn(tb, model, 1, prewarm)
}

func (c *churn) close(tb testing.TB) {
	tb.Helper()
	if err := c.r.Close(context.Background()); err != nil {
		tb.Error(err)
	}
}

func newChurnOn(tb testing.TB, model *inference.Model, slots uint32, prewarm int) *churn {
	tb.Helper()
	pack, err := defaultPack()
	if err != nil {
		tb.Fatal(err)
	}
	c := &churn{clocks: map[string]*pipeline.ManualClock{}, media: map[string]*frameMedia{}}
	c.r, err = New(Config{
		Devices: []*fleetv1.GPU{{Index: 0, Slots: slots}},
		Model:   model,
		Prewarm: prewarm,
		Avatar:  func(string) (*avatar.Pack, error) { return pack, nil },
		Media: func(s *fleetv1.Session, _ MediaHooks) (Media, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.media[s.GetId()] = newFrameMedia()
			return c.media[s.GetId()], nil
		},
		Clock: func(s *fleetv1.Session) pipeline.Clock {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.clocks[s.GetId()] = pipeline.NewManualClock()
			return c.clocks[s.GetId()]
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// start starts a session and returns once its first encoded frame (a
// keyframe) is out.
func (c *churn) start(tb testing.TB, id string, slot uint32) {
	tb.Helper()
	if err := c.r.Start(context.Background(), &fleetv1.Session{Id: id, Slot: slot}); err != nil {
		tb.Fatal(err)
	}
	c.mu.Lock()
	clock, m := c.clocks[id], c.media[id]
	c.mu.Unlock()
	select {
	case clock.Ticks() <- time.Time{}:
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s took no tick", id)
	}
	select {
	case s := <-m.first:
		if !s.Keyframe || len(s.Data) == 0 {
			tb.Fatalf("%s: first frame keyframe=%v, %d bytes", id, s.Keyframe, len(s.Data))
		}
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s sent no frame", id)
	}
}

// stop stops a session and checks its transport was closed.
func (c *churn) stop(tb testing.TB, id string) {
	tb.Helper()
	if err := c.r.Stop(context.Background(), id, fleetv1.EndReason_END_REASON_DELETED); err != nil {
		tb.Fatal(err)
	}
	c.mu.Lock()
	m := c.media[id]
	delete(c.media, id)
	delete(c.clocks, id)
	c.mu.Unlock()
	select {
	case <-m.closedCh:
	default:
		tb.Fatalf("%s: transport not closed by Stop", id)
	}
}

func heapInuse() uint64 {
	goruntime.GC()
	goruntime.GC()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestPrewarmReuse starts and stops 200 sessions, three at a time (one per
// slot): each sends its first frame, the prewarmed inference contexts are
// reused (no more are ever created than the pool holds), and neither the
// heap nor the goroutines grow (TestMain checks for leaks).
func TestPrewarmReuse(t *testing.T) {
	const (
		slots    = 3
		sessions = 200
		perSlot  = (sessions + slots - 1) / slots
	)
	c := newChurn(t, newModel(t), slots, slots)
	var base, end uint64
	var wg sync.WaitGroup
	// Rounds: each slot runs one session per round; the heap is sampled
	// between rounds, with no session running.
	for round := range perSlot {
		for slot := range uint32(slots) {
			n := round*slots + int(slot)
			if n >= sessions {
				break
			}
			wg.Go(func() {
				id := fmt.Sprintf("s%03d", n)
				c.start(t, id, slot)
				c.stop(t, id)
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		switch (round + 1) * slots {
		case 51:
			base = heapInuse()
		case perSlot * slots:
			end = heapInuse()
		}
	}
	if got := c.r.pools[0].created.Load(); got > slots {
		t.Errorf("%d inference contexts created for %d sessions, want at most the pool's %d", got, sessions, slots)
	}
	bound := max(base+base/5, base+8<<20)
	t.Logf("heap in use: %.1f MiB after 51 sessions, %.1f MiB after %d", float64(base)/(1<<20), float64(end)/(1<<20), sessions)
	if end > bound {
		t.Errorf("heap grew from %d to %d bytes (bound %d)", base, end, bound)
	}
	if got := c.r.Sessions(); len(got) != 0 {
		t.Errorf("sessions left: %v", got)
	}
}
