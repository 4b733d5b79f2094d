package sfu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// checkStreams checks that each client got every frame and audio packet
// the source wrote over the last window, with no sequence gaps, and that the
// source itself kept ~25 fps (on 2 cores under -race, with every Pion peer
// in this process, it may fall behind: that is the test's CPU, not the SFU).
func checkStreams(t *testing.T, src *source, clients []*client, window time.Duration, before []streamLog, framesBefore, audioBefore int64) {
	t.Helper()
	wroteFrames, wroteAudio := src.frames.Load()-framesBefore, src.audio.Load()-audioBefore
	fps := float64(wroteFrames) / window.Seconds()
	if fps < 18 {
		t.Errorf("source wrote %.1f frames/s, want ~25", fps)
	}
	t.Logf("source wrote %.1f frames/s, %.1f audio packets/s", fps, float64(wroteAudio)/window.Seconds())
	skipped := 0
	for i, c := range clients {
		v, a := c.snapshot(webrtc.RTPCodecTypeVideo), c.snapshot(webrtc.RTPCodecTypeAudio)
		frames := int64(v.frames - before[i].frames)
		if frames < wroteFrames-2 || frames > wroteFrames+2 {
			t.Errorf("viewer %d: %d video frames in the window, source wrote %d", i, frames, wroteFrames)
		}
		packets := int64(a.packets - before[len(clients)+i].packets)
		if packets < wroteAudio-3 || packets > wroteAudio+3 {
			t.Errorf("viewer %d: %d audio packets in the window, source wrote %d", i, packets, wroteAudio)
		}
		if v.gaps != 0 || a.gaps != 0 {
			t.Errorf("viewer %d: sequence gaps video %d audio %d, want 0", i, v.gaps, a.gaps)
		}
		if v.skipped > 0 {
			skipped++
		}
	}
	if skipped > 0 {
		t.Errorf("%d of %d viewers got delta frames before their first keyframe", skipped, len(clients))
	}
}

func snapshots(clients []*client) []streamLog {
	out := make([]streamLog, 0, 2*len(clients))
	for _, c := range clients {
		out = append(out, c.snapshot(webrtc.RTPCodecTypeVideo))
	}
	for _, c := range clients {
		out = append(out, c.snapshot(webrtc.RTPCodecTypeAudio))
	}
	return out
}

// connectViewers adds n viewers and waits until each receives both tracks.
func connectViewers(t *testing.T, room *Room, n int, opts clientOptions) []*client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clients := make([]*client, n)
	for i := range clients {
		clients[i], _ = addViewer(t, ctx, room, opts)
	}
	for i, c := range clients {
		waitFor(t, 10*time.Second, fmt.Sprintf("viewer %d media", i), func() bool {
			return c.snapshot(webrtc.RTPCodecTypeVideo).packets > 0 && c.snapshot(webrtc.RTPCodecTypeAudio).packets > 0
		})
	}
	return clients
}

func TestFanout(t *testing.T) {
	for _, n := range []int{1, 20} {
		t.Run(fmt.Sprintf("viewers=%d", n), func(t *testing.T) {
			s := newTestSFU(t, Config{MaxPendingViewers: n})
			var keyframeRequests atomic.Int64
			var src *source
			room, err := s.OpenRoom("fanout", RoomOptions{OnKeyframeRequest: func() {
				keyframeRequests.Add(1)
				src.keyReq.Store(true)
			}})
			if err != nil {
				t.Fatal(err)
			}
			src = startSource(room, 4000)
			defer src.close()
			clients := connectViewers(t, room, n, clientOptions{video: true, audio: true})
			before, fb, ab := snapshots(clients), src.frames.Load(), src.audio.Load()
			const window = 2 * time.Second
			time.Sleep(window)
			checkStreams(t, src, clients, window, before, fb, ab)
			if room.Viewers() != n {
				t.Errorf("Viewers() = %d, want %d", room.Viewers(), n)
			}
			if keyframeRequests.Load() == 0 {
				t.Error("joining viewers asked for no keyframe")
			}
			st := room.Stats()
			if st.VideoKeyframesSent == 0 || st.VideoKeyframesSent != uint64(src.keys.Load()) {
				t.Errorf("stats: %d keyframes sent, source wrote %d", st.VideoKeyframesSent, src.keys.Load())
			}
			t.Logf("%d viewers: slowest WriteVideo %v, %d keyframe requests forwarded", n, time.Duration(src.slowest.Load()), keyframeRequests.Load())
		})
	}
}

// TestICELite: clients connect to an ICE-lite SFU the same way.
func TestICELite(t *testing.T) {
	s := newTestSFU(t, Config{ICELite: true})
	room, err := s.OpenRoom("lite", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := startSource(room, 1000)
	defer src.close()
	connectViewers(t, room, 2, clientOptions{video: true, audio: true})
}

// TestStalledViewersDoNotSlowOthers: one viewer never reads its tracks and
// another loses its network; the rest keep the full rate and the writer
// never waits.
func TestStalledViewersDoNotSlowOthers(t *testing.T) {
	s := newTestSFU(t, Config{})
	room, err := s.OpenRoom("stall", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := startSource(room, 4000)
	defer src.close()
	good := connectViewers(t, room, 3, clientOptions{video: true, audio: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stalled, _ := addViewer(t, ctx, room, clientOptions{video: true, audio: true, noRead: true})
	dead, _ := addViewer(t, ctx, room, clientOptions{video: true, audio: true, cuttable: true})
	for _, c := range []*client{stalled, dead} {
		waitFor(t, 10*time.Second, "stalled viewers' tracks", func() bool { return c.track(webrtc.RTPCodecTypeVideo) != nil })
	}
	dead.conn.cut.Store(true)
	before, framesBefore, audioBefore := snapshots(good), src.frames.Load(), src.audio.Load()
	const window = 3 * time.Second
	time.Sleep(window)
	checkStreams(t, src, good, window, before, framesBefore, audioBefore)
	if got := src.frames.Load() - framesBefore; got < 70 {
		t.Errorf("the source wrote %d frames in %v, want ~75: writes were held up", got, window)
	}
	if slow := time.Duration(src.slowest.Load()); slow > 50*time.Millisecond {
		t.Errorf("slowest WriteVideo took %v", slow)
	}
}

// TestKeyframeRequests: a viewer's PLI reaches the encoder within 200 ms;
// a flood of PLIs and FIRs is limited to about one per interval.
func TestKeyframeRequests(t *testing.T) {
	const interval = 300 * time.Millisecond
	s := newTestSFU(t, Config{KeyframeInterval: interval})
	var mu sync.Mutex
	var requests []time.Time
	room, err := s.OpenRoom("pli", RoomOptions{OnKeyframeRequest: func() {
		mu.Lock()
		requests = append(requests, time.Now())
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(requests) }
	src := startSource(room, 1000)
	defer src.close()
	c := connectViewers(t, room, 1, clientOptions{video: true, audio: true})[0]
	waitFor(t, time.Second, "the join's keyframe request", func() bool { return count() >= 1 })
	time.Sleep(2 * interval) // the join's request is out of the window
	ssrc := uint32(c.track(webrtc.RTPCodecTypeVideo).SSRC())

	n := count()
	sent := time.Now()
	if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "PLI → keyframe request", func() bool { return count() > n })
	mu.Lock()
	latency := requests[n].Sub(sent)
	mu.Unlock()
	if latency > 200*time.Millisecond {
		t.Errorf("PLI took %v to become a keyframe request, want ≤ 200 ms", latency)
	}
	t.Logf("PLI → OnKeyframeRequest in %v", latency)

	// Flood: 100 PLIs and 100 FIRs over 1.5 s.
	time.Sleep(2 * interval)
	n = count()
	start := time.Now()
	for i := 0; i < 100; i++ {
		pkts := []rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}, &rtcp.FullIntraRequest{MediaSSRC: ssrc, FIR: []rtcp.FIREntry{{SSRC: ssrc, SequenceNumber: uint8(i)}}}}
		if err := c.pc.WriteRTCP(pkts); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Millisecond)
	}
	elapsed := time.Since(start)
	time.Sleep(interval + 100*time.Millisecond) // the held request goes out
	got := count() - n
	// At most one per interval over the time watched, plus the first.
	most := int(time.Since(start)/interval) + 1
	if got < 2 || got > most {
		t.Errorf("a flood over %v made %d keyframe requests in %v, want 2..%d", elapsed, got, time.Since(start), most)
	}
	st := room.Stats()
	if v := st.Viewers[0]; v.PLIsReceived < 90 || v.FIRsReceived < 90 {
		t.Errorf("stats: %d PLIs, %d FIRs received, want ~101 and ~100", v.PLIsReceived, v.FIRsReceived)
	}
	t.Logf("flood of 200 requests over %v → %d keyframe requests; stats %d requests, %d forwarded", elapsed, got, st.KeyframeRequests, st.KeyframesRequested)
}

// TestAbandonedViewer: a viewer whose network goes (no goodbye) is removed
// once ICE fails, and OnViewersChanged says so; one that closes properly is
// removed at once.
func TestAbandonedViewer(t *testing.T) {
	s := newTestSFU(t, Config{ICEDisconnectedTimeout: 500 * time.Millisecond, ICEFailedTimeout: 500 * time.Millisecond})
	counts := make(chan int, 16)
	room, err := s.OpenRoom("gone", RoomOptions{OnViewersChanged: func(n int) { counts <- n }})
	if err != nil {
		t.Fatal(err)
	}
	src := startSource(room, 1000)
	defer src.close()
	expect := func(want int, within time.Duration) {
		t.Helper()
		select {
		case n := <-counts:
			if n != want {
				t.Fatalf("OnViewersChanged(%d), want %d", n, want)
			}
		case <-time.After(within):
			t.Fatalf("no OnViewersChanged(%d) within %v", want, within)
		}
	}
	ctx := context.Background()
	leaver, _ := addViewer(t, ctx, room, clientOptions{video: true, audio: true, cuttable: true})
	expect(1, 2*time.Second)
	closer, _ := addViewer(t, ctx, room, clientOptions{video: true, audio: true})
	expect(2, 2*time.Second)
	waitFor(t, 5*time.Second, "both connected", func() bool {
		return leaver.snapshot(webrtc.RTPCodecTypeVideo).packets > 0 && closer.snapshot(webrtc.RTPCodecTypeVideo).packets > 0
	})

	cut := time.Now()
	leaver.conn.cut.Store(true)
	expect(1, 10*time.Second)
	t.Logf("abandoned viewer removed %v after its network went", time.Since(cut))

	closer.close()
	expect(0, 5*time.Second)
	if room.Viewers() != 0 {
		t.Fatalf("Viewers() = %d", room.Viewers())
	}
}

// TestRemoveViewer: RemoveViewer ends a viewer; unknown ids are fine.
func TestRemoveViewer(t *testing.T) {
	s := newTestSFU(t, Config{})
	room, err := s.OpenRoom("rm", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := startSource(room, 1000)
	defer src.close()
	c, id := addViewer(t, context.Background(), room, clientOptions{video: true})
	waitFor(t, 5*time.Second, "video", func() bool { return c.snapshot(webrtc.RTPCodecTypeVideo).packets > 0 })
	if err := room.RemoveViewer(id); err != nil {
		t.Fatal(err)
	}
	if err := room.RemoveViewer(id); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if err := room.RemoveViewer("nobody"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "client sees the close", func() bool {
		st := c.pc.ConnectionState()
		return st == webrtc.PeerConnectionStateClosed || st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateDisconnected
	})
}

// TestRoomFull: AddViewer beyond the cap fails with ErrRoomFull; a place
// freed is taken again.
func TestRoomFull(t *testing.T) {
	s := newTestSFU(t, Config{MaxViewersPerRoom: 2})
	room, err := s.OpenRoom("full", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for i := 0; i < 2; i++ {
		_, offer := newClient(t, clientOptions{video: true, audio: true}, nil)
		id, _, err := room.AddViewer(ctx, offer)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	_, offer := newClient(t, clientOptions{video: true, audio: true}, nil)
	if _, _, err := room.AddViewer(ctx, offer); !errors.Is(err, ErrRoomFull) {
		t.Fatalf("third viewer: %v, want ErrRoomFull", err)
	}
	if err := room.RemoveViewer(ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := room.AddViewer(ctx, offer); err != nil {
		t.Fatalf("after a removal: %v", err)
	}
}

// TestRoomLifecycle: rooms are unique, closing one frees its id, writes to a
// closed room fail, and the SFU closes what is left.
func TestRoomLifecycle(t *testing.T) {
	s := newTestSFU(t, Config{})
	room, err := s.OpenRoom("a", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenRoom("a", RoomOptions{}); !errors.Is(err, ErrRoomExists) {
		t.Fatalf("second open: %v", err)
	}
	if r, ok := s.Room("a"); !ok || r != room {
		t.Fatal("Room(a) not found")
	}
	_, offer := newClient(t, clientOptions{video: true, audio: true}, nil)
	if _, _, err := room.AddViewer(context.Background(), offer); err != nil {
		t.Fatal(err)
	}
	if err := room.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Room("a"); ok {
		t.Fatal("closed room still listed")
	}
	if err := room.WriteVideo(Sample{Data: []byte{1}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if _, _, err := room.AddViewer(context.Background(), offer); !errors.Is(err, ErrClosed) {
		t.Fatalf("add after close: %v", err)
	}
	if _, err := s.OpenRoom("a", RoomOptions{}); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if _, err := s.OpenRoom("b", RoomOptions{}); err != nil {
		t.Fatal(err)
	}
}
