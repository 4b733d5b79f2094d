package sfu

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

func TestPendingDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.ConnectTimeout != 10*time.Second || c.MaxPendingViewers != 10 || c.MaxPendingPerToken != 5 {
		t.Fatalf("defaults: connect timeout %v, pending %d, per token %d; want 10s, 10, 5", c.ConnectTimeout, c.MaxPendingViewers, c.MaxPendingPerToken)
	}
}

// 60 offers with one token that never connect take at most the per-token
// cap of places; the rest are refused with ErrTooManyPending without
// taking one, and a viewer with another token still joins and connects.
func TestPendingViewersPerToken(t *testing.T) {
	s := newTestSFU(t, Config{MaxViewersPerRoom: 50, MaxPendingViewers: 10, MaxPendingPerToken: 5})
	room, err := s.OpenRoom("pending", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	offer := pionOffer(t) // never answered: these viewers never connect
	admitted := 0
	for i := range 60 {
		_, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "t1"})
		switch {
		case err == nil:
			admitted++
		case errors.Is(err, ErrTooManyPending):
		default:
			t.Fatalf("offer %d: %v", i, err)
		}
	}
	if admitted != 5 || room.Viewers() != 5 {
		t.Fatalf("60 offers of one token: %d admitted, room holds %d; want 5 and 5", admitted, room.Viewers())
	}
	// A per-call cap replaces the SFU's.
	if _, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "t1", MaxPendingPerToken: 6}); err != nil {
		t.Fatalf("with a per-call cap of 6: %v", err)
	}
	if _, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "t1", MaxPendingPerToken: 6}); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("7th of one token with a cap of 6: %v, want ErrTooManyPending", err)
	}
	// Another token joins and connects; once connected it is not pending.
	c, offer2 := newClient(t, clientOptions{video: true, audio: true}, nil)
	_, answer, err := room.AddViewerWith(ctx, offer2, ViewerOptions{TokenID: "t2"})
	if err != nil {
		t.Fatalf("viewer of another token: %v", err)
	}
	c.answer(t, answer)
	waitFor(t, 20*time.Second, "the other token's viewer connects", func() bool {
		return c.pc.ConnectionState() == webrtc.PeerConnectionStateConnected
	})
	waitFor(t, 5*time.Second, "the SFU sees it connected", func() bool {
		room.mu.Lock()
		defer room.mu.Unlock()
		n, _ := room.pendingLocked("")
		return n == 6
	})
	// The room-wide cap: 6 pending of t1, so 4 more of new tokens, then no more.
	for i := range 4 {
		if _, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "x" + string(rune('a'+i))}); err != nil {
			t.Fatalf("pending viewer %d of a new token: %v", i, err)
		}
	}
	if _, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "y"}); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("11th pending viewer: %v, want ErrTooManyPending", err)
	}
	if room.Viewers() != 11 {
		t.Fatalf("room holds %d viewers, want 11 (10 pending, 1 connected)", room.Viewers())
	}
}

// A viewer that never completes ICE is dropped after ConnectTimeout, and
// its place is free again.
func TestPendingViewerDroppedAfterConnectTimeout(t *testing.T) {
	s := newTestSFU(t, Config{ConnectTimeout: 500 * time.Millisecond, MaxPendingPerToken: 1})
	room, err := s.OpenRoom("timeout", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	offer := pionOffer(t)
	if _, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "t"}); !errors.Is(err, ErrTooManyPending) {
		t.Fatalf("second pending viewer of the token: %v, want ErrTooManyPending", err)
	}
	waitFor(t, 20*time.Second, "the viewer that never connected is dropped", func() bool { return room.Viewers() == 0 })
	if _, _, err := room.AddViewerWith(ctx, offer, ViewerOptions{TokenID: "t"}); err != nil {
		t.Fatalf("after the drop: %v", err)
	}
}
