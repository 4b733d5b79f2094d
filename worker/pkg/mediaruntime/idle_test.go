package mediaruntime

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/idleloop"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// Idle sessions of one avatar share one encoding of its idle loop: the
// loop is encoded once (one period of frames) whatever the number of
// sessions, each session sends it once it reaches the loop's keyframe, and
// the loop is evicted when the last session ends. With NoIdleShare every
// session encodes every frame itself.
func TestIdleSessionsShareOneEncode(t *testing.T) {
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	model := newModel(t)
	const n, ticks = 4, 110 // frame 50 (tick 56) is the loop's second keyframe
	for _, tc := range []struct {
		name  string
		share bool
	}{{"shared", true}, {"own", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			clocks := map[string]*pipeline.ManualClock{}
			r, err := New(Config{
				Devices:     []*fleetv1.GPU{{Index: 0, Slots: n}},
				Model:       model,
				Prewarm:     n,
				NoIdleShare: !tc.share,
				Avatar:      func(string) (*avatar.Pack, error) { return pack, nil },
				Media:       NewDiscardMedia,
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
			defer func() {
				if err := r.Close(context.Background()); err != nil {
					t.Error(err)
				}
			}()
			ctx := context.Background()
			ids := make([]string, n)
			for i := range n {
				ids[i] = fmt.Sprintf("i%d", i)
				if err := r.Start(ctx, &fleetv1.Session{Id: ids[i], Slot: uint32(i), Avatar: "default"}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.share {
				deadline := time.Now().Add(30 * time.Second)
				for r.IdleLoops().Ready != 1 {
					if time.Now().After(deadline) {
						t.Fatalf("loop not ready: %+v", r.IdleLoops())
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			for range ticks {
				for _, id := range ids {
					mu.Lock()
					c := clocks[id]
					mu.Unlock()
					c.Ticks() <- time.Time{}
				}
			}
			var own, shared uint64
			for _, id := range ids {
				var st Stats
				deadline := time.Now().Add(10 * time.Second)
				for st.Frames < ticks && time.Now().Before(deadline) {
					if st, err = r.Stats(id); err != nil {
						t.Fatal(err)
					}
					time.Sleep(time.Millisecond)
				}
				if st.Frames != ticks {
					t.Fatalf("%s sent %d frames, want %d", id, st.Frames, ticks)
				}
				own += st.Frames - st.Shared
				shared += st.Shared
				if tc.share && st.Shared < ticks-pipeline.LatencyTicks-100 {
					t.Errorf("%s: %d shared frames, want those from frame 100 at least", id, st.Shared)
				}
			}
			loops := r.IdleLoops()
			t.Logf("%d sessions × %d frames: %d encoded by the sessions, %d sent from the shared loop; loop encodes %d (%d frames, %d bytes)",
				n, ticks, own, shared, loops.Encodes, loops.EncodedFrames, loops.Bytes)
			if tc.share {
				if loops.Encodes != 1 || loops.EncodedFrames != uint64(pack.Period()) || loops.Loops != 1 {
					t.Errorf("loops %+v: want one encoding of %d frames", loops, pack.Period())
				}
				if own+loops.EncodedFrames >= n*ticks {
					t.Errorf("sharing encoded %d frames in all, not fewer than %d", own+loops.EncodedFrames, n*ticks)
				}
			} else if shared != 0 || loops != (idleloop.Stats{}) || own != n*ticks {
				t.Errorf("without sharing: %d shared, loops %+v, %d own", shared, loops, own)
			}
			for _, id := range ids {
				if err := r.Stop(ctx, id, fleetv1.EndReason_END_REASON_DELETED); err != nil {
					t.Fatal(err)
				}
			}
			if l := r.IdleLoops(); l.Loops != 0 || l.Bytes != 0 {
				t.Errorf("after every session stopped: %+v, want the loop evicted", l)
			}
		})
	}
}
