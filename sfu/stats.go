package sfu

import (
	"sort"
	"sync"
	"time"
)

// RoomStats are a room's media figures. Counters run from the room's opening;
// bitrates average over the time since the previous Stats call (at least one
// second apart; a closer call repeats the last figure).
type RoomStats struct {
	VideoFramesSent, VideoKeyframesSent, AudioPacketsSent uint64
	VideoBitrateBps, AudioBitrateBps                      float64
	// KeyframeRequests counts requests from viewers and joins;
	// KeyframesRequested those forwarded to OnKeyframeRequest.
	KeyframeRequests, KeyframesRequested uint64
	Publishers                           int
	Viewers                              []ViewerStats
}

// ViewerStats are one viewer's figures, from its own RTP and RTCP.
type ViewerStats struct {
	ID          string
	ConnectedAt time.Time // zero until the connection is up
	State       string    // the PeerConnection state: new, connecting, connected, ...
	// PacketsSent and BytesSent count RTP packets (header and payload,
	// before SRTP) sent to the viewer, retransmissions excluded.
	PacketsSent, BytesSent uint64
	BitrateBps             float64
	// Feedback the viewer sent.
	NACKsReceived, PLIsReceived, FIRsReceived uint64
	// NACKedPackets counts the packets those NACKs asked for.
	NACKedPackets uint64
	// RTT is the latest round trip time from the viewer's receiver
	// reports (0 before the first report that echoes a sender report).
	RTT time.Duration
}

// Stats returns the room's figures, viewers sorted by id.
func (r *Room) Stats() RoomStats {
	now := time.Now()
	st := RoomStats{
		VideoFramesSent:    r.videoFrames.Load(),
		VideoKeyframesSent: r.videoKeyframes.Load(),
		AudioPacketsSent:   r.audioPackets.Load(),
	}
	st.VideoBitrateBps = r.videoRate.rate(now, r.videoBytes.Load())
	st.AudioBitrateBps = r.audioRate.rate(now, r.audioBytes.Load())
	st.KeyframeRequests, st.KeyframesRequested = r.keyframes.counts()
	r.mu.Lock()
	st.Publishers = len(r.publishers)
	viewers := make([]*viewer, 0, len(r.viewers))
	for _, v := range r.viewers {
		viewers = append(viewers, v)
	}
	r.mu.Unlock()
	st.Viewers = make([]ViewerStats, 0, len(viewers))
	for _, v := range viewers {
		st.Viewers = append(st.Viewers, v.stats(now))
	}
	sort.Slice(st.Viewers, func(i, j int) bool { return st.Viewers[i].ID < st.Viewers[j].ID })
	return st
}

// rateMeter turns a byte counter into a bitrate between reads.
type rateMeter struct {
	mu    sync.Mutex
	t     time.Time
	bytes uint64
	bps   float64
	fresh bool // no full window yet
}

func (m *rateMeter) start(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t, m.bytes, m.fresh = now, 0, true
}

// rate returns the bitrate of total (a byte counter) over the window ending
// now; windows are at least a second long.
func (m *rateMeter) rate(now time.Time, total uint64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	dt := now.Sub(m.t)
	switch {
	case dt >= time.Second:
		m.bps = float64(total-m.bytes) * 8 / dt.Seconds()
		m.t, m.bytes, m.fresh = now, total, false
	case m.fresh && dt > 100*time.Millisecond:
		return float64(total-m.bytes) * 8 / dt.Seconds()
	}
	return m.bps
}

// ntpCompact is the middle 32 bits of the NTP timestamp of t (RFC 3550
// §4), the unit of LSR and DLSR in reception reports: 1/65536 s.
func ntpCompact(t time.Time) uint32 {
	return uint32(ntpTime(t) >> 16)
}

// rttFromReport computes the round trip from a reception report received
// at now (RFC 3550 §6.4.1): A - LSR - DLSR. ok is false when the report
// echoes no sender report or the figure is nonsense.
func rttFromReport(now time.Time, lsr, dlsr uint32) (time.Duration, bool) {
	if lsr == 0 {
		return 0, false
	}
	d := ntpCompact(now) - lsr - dlsr
	if int32(d) < 0 {
		return 0, false
	}
	return time.Duration(uint64(d) * uint64(time.Second) >> 16), true
}
