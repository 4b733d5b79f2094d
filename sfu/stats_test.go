package sfu

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// TestStats: counters move with real traffic and feedback: packets, bytes,
// bitrates, a NACK (answered from the cache), a PLI, RTT from receiver
// reports; the Prometheus collector exports them as worker-wide figures
// with no session or viewer label, and its counters keep a closed room's
// counts.
func TestStats(t *testing.T) {
	s := newTestSFU(t, Config{})
	room, err := s.OpenRoom("stats", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := startSource(room, 4000)
	defer src.close()
	c := connectViewers(t, room, 1, clientOptions{video: true, audio: true})[0]
	ssrc := uint32(c.track(webrtc.RTPCodecTypeVideo).SSRC())
	last := c.snapshot(webrtc.RTPCodecTypeVideo).lastSeq
	dups := c.snapshot(webrtc.RTPCodecTypeVideo).dups
	if err := c.pc.WriteRTCP([]rtcp.Packet{
		&rtcp.TransportLayerNack{MediaSSRC: ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{last - 3, last - 2})},
		&rtcp.PictureLossIndication{MediaSSRC: ssrc},
	}); err != nil {
		t.Fatal(err)
	}
	var v ViewerStats
	defer func() { t.Logf("last viewer stats: %+v", v) }()
	waitFor(t, 5*time.Second, "NACK, PLI and RTT in the stats", func() bool {
		v = room.Stats().Viewers[0]
		return v.NACKsReceived >= 1 && v.PLIsReceived >= 1 && v.RTT > 0
	})
	if v.NACKedPackets != 2 {
		t.Errorf("NACKed packets %d, want 2", v.NACKedPackets)
	}
	waitFor(t, 2*time.Second, "the retransmissions", func() bool { return c.snapshot(webrtc.RTPCodecTypeVideo).dups >= dups+2 })
	time.Sleep(1100 * time.Millisecond)
	st := room.Stats()
	v = st.Viewers[0]
	if v.PacketsSent == 0 || v.BytesSent < v.PacketsSent*12 || v.State != "connected" || v.ConnectedAt.IsZero() {
		t.Errorf("viewer stats %+v", v)
	}
	if v.RTT > 100*time.Millisecond {
		t.Errorf("RTT %v on loopback", v.RTT)
	}
	// 4000-byte frames at 25 fps are 800 kbit/s; a keyframe is 3 of them.
	if st.VideoBitrateBps < 700e3 || st.VideoBitrateBps > 1.3e6 || v.BitrateBps < 700e3 {
		t.Errorf("video bitrate %.0f, viewer bitrate %.0f, want ~800 kbit/s", st.VideoBitrateBps, v.BitrateBps)
	}
	if st.AudioBitrateBps < 25e3 || st.AudioPacketsSent == 0 || st.VideoFramesSent == 0 {
		t.Errorf("room stats %+v", st)
	}
	t.Logf("viewer: %d packets, %d bytes, %.0f bit/s, RTT %v; room video %.0f bit/s audio %.0f bit/s",
		v.PacketsSent, v.BytesSent, v.BitrateBps, v.RTT, st.VideoBitrateBps, st.AudioBitrateBps)

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(s); err != nil {
		t.Fatal(err)
	}
	got := gatherSFU(t, reg)
	for name, min := range map[string]float64{
		"avatarfleet_sfu_rooms":                       1,
		"avatarfleet_sfu_room_viewers":                1,
		"avatarfleet_sfu_video_frames_total":          1,
		"avatarfleet_sfu_viewer_packets_sent_total":   1,
		"avatarfleet_sfu_viewer_bytes_sent_total":     1,
		"avatarfleet_sfu_viewer_nacks_received_total": 1,
		"avatarfleet_sfu_viewer_plis_received_total":  1,
		"avatarfleet_sfu_viewer_rtt_max_seconds":      1e-9,
		"avatarfleet_sfu_viewer_connected":            1,
	} {
		if got[name] < min {
			t.Errorf("metric %s = %v, want ≥ %v", name, got[name], min)
		}
	}

	// A closed room leaves the open-room gauges and keeps its counts in the
	// counters.
	if err := room.Close(); err != nil {
		t.Fatal(err)
	}
	after := gatherSFU(t, reg)
	if after["avatarfleet_sfu_rooms"] != 0 || after["avatarfleet_sfu_room_viewers"] != 0 || after["avatarfleet_sfu_viewer_connected"] != 0 {
		t.Errorf("closed room still counted open: %v", after)
	}
	for _, name := range []string{"avatarfleet_sfu_video_frames_total", "avatarfleet_sfu_viewer_packets_sent_total", "avatarfleet_sfu_viewer_plis_received_total"} {
		if after[name] < got[name] {
			t.Errorf("counter %s went down after the room closed: %v < %v", name, after[name], got[name])
		}
	}
}

// gatherSFU gathers reg's metrics by name, failing on any labelled series.
func gatherSFU(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) > 0 {
				t.Errorf("%s has labels %v: ids must not be labels", f.GetName(), m.GetLabel())
			}
			got[f.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return got
}

func TestRTTFromReport(t *testing.T) {
	now := time.Now()
	sent := now.Add(-30 * time.Millisecond)
	dlsr := uint32(10 * 65536 / 1000) // 10 ms held by the receiver
	rtt, ok := rttFromReport(now, ntpCompact(sent), dlsr)
	if !ok || rtt < 19*time.Millisecond || rtt > 21*time.Millisecond {
		t.Fatalf("rtt %v %v, want 20 ms", rtt, ok)
	}
	if _, ok := rttFromReport(now, 0, 0); ok {
		t.Fatal("a report without LSR gave an RTT")
	}
}
