package idleloop

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/codec"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

var defaultPack = sync.OnceValues(avatar.Default)

func pack(t *testing.T) *avatar.Pack {
	t.Helper()
	p, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitReady(t *testing.T, h *Handle) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, ok := h.Frame(0); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("loop not ready")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Every holder of one avatar at one bitrate gets the same frames from one
// encoding; the loop repeats with the avatar's period, has keyframes
// exactly every KeyframeInterval positions from 0, and is evicted when the
// last holder releases it.
func TestShareOneEncode(t *testing.T) {
	p := pack(t)
	c, err := New(Options{KeyframeInterval: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hs := make([]*Handle, 8)
	for i := range hs {
		hs[i] = c.Acquire(p, 0)
	}
	for _, h := range hs {
		waitReady(t, h)
	}
	other := c.Acquire(p, 500_000)
	waitReady(t, other)
	st := c.Stats()
	if st.Encodes != 2 || st.EncodedFrames != uint64(2*p.Period()) || st.Loops != 2 || st.Ready != 2 || st.Bytes <= 0 {
		t.Fatalf("stats %+v, want 2 encodes of %d frames (one per bitrate), 2 ready loops", st, p.Period())
	}
	per := int64(p.Period())
	for tick := range 3 * per {
		d0, k0, ok := hs[0].Frame(tick)
		if !ok || len(d0) == 0 {
			t.Fatalf("tick %d: no frame", tick)
		}
		if want := (tick%per)%20 == 0; k0 != want || codec.IsVP8Keyframe(d0) != want {
			t.Fatalf("tick %d: keyframe %v, want %v", tick, k0, want)
		}
		for _, h := range hs[1:] {
			if d, _, _ := h.Frame(tick); &d[0] != &d0[0] {
				t.Fatalf("tick %d: holders got different frames", tick)
			}
		}
		if d, _, _ := hs[0].Frame(tick + per); &d[0] != &d0[0] {
			t.Fatalf("tick %d: the loop does not repeat after %d", tick, per)
		}
	}
	if _, _, ok := hs[0].Frame(-1); ok {
		t.Error("a frame for a negative tick")
	}
	for _, h := range hs {
		h.Release()
		h.Release() // idempotent
	}
	if st := c.Stats(); st.Loops != 1 {
		t.Errorf("after every holder of one loop released: %+v, want the other loop only", st)
	}
	other.Release()
	if st := c.Stats(); st.Loops != 0 || st.Bytes != 0 {
		t.Errorf("after all released: %+v, want nothing held", st)
	}
	h := c.Acquire(p, 0)
	waitReady(t, h)
	h.Release()
	if st := c.Stats(); st.Encodes != 3 {
		t.Errorf("re-acquired after eviction: %d encodes, want 3", st.Encodes)
	}
}

// A loop that does not fit in MaxBytes is never shared; a release during
// the encoding cancels it; Close stops encodings in flight.
func TestBounds(t *testing.T) {
	p := pack(t)
	tests := []struct {
		name string
		run  func(t *testing.T, c *Cache)
	}{
		{"over the byte bound", func(t *testing.T, c *Cache) {
			h := c.Acquire(p, 0)
			defer h.Release()
			deadline := time.Now().Add(30 * time.Second)
			for c.Stats().EncodedFrames < uint64(p.Period()) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			if _, _, ok := h.Frame(0); ok {
				t.Error("a loop over the byte bound was shared")
			}
			if st := c.Stats(); st.Bytes != 0 || st.Ready != 0 {
				t.Errorf("stats %+v", st)
			}
		}},
		{"released while encoding", func(t *testing.T, c *Cache) {
			h := c.Acquire(p, 0)
			h.Release()
			if st := c.Stats(); st.Loops != 0 {
				t.Errorf("stats %+v", st)
			}
		}},
		{"closed while encoding", func(t *testing.T, c *Cache) {
			h := c.Acquire(p, 0)
			c.Close()
			h.Release()
			h2 := c.Acquire(p, 0)
			if _, _, ok := h2.Frame(0); ok {
				t.Error("a frame after Close from a fresh acquire")
			}
			h2.Release()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Options{MaxBytes: 1000})
			if err != nil {
				t.Fatal(err)
			}
			tc.run(t, c)
			c.Close()
		})
	}
	for _, bad := range []Options{{MaxBytes: -1}, {KeyframeInterval: -1}, {KeyframeInterval: MaxPeriod + 1}} {
		if _, err := New(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
