package sfu

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metricDescs are the SFU's Prometheus metrics. They are worker-wide
// aggregates without labels: a session (room) or viewer id is never a
// label (unbounded cardinality, and ids belong to the authenticated stats
// API, Room.Stats). Counters add closed rooms' and departed viewers'
// figures, so they never go down.
type metricDescs struct {
	rooms, roomViewers, roomPublishers                    *prometheus.Desc
	videoFrames, videoKeyframes, audioPackets             *prometheus.Desc
	keyframeRequests, keyframesRequested                  *prometheus.Desc
	videoBitrate, audioBitrate                            *prometheus.Desc
	viewerPackets, viewerBytes, viewerNACKs, viewerNACKed *prometheus.Desc
	viewerPLIs, viewerFIRs, viewerRTT, viewerConnected    *prometheus.Desc
}

func newMetricDescs() *metricDescs {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("avatarfleet_sfu_"+name, help, nil, nil)
	}
	return &metricDescs{
		rooms:              d("rooms", "Open rooms (sessions with media)."),
		roomViewers:        d("room_viewers", "Viewers of the open rooms, connecting or connected."),
		roomPublishers:     d("room_publishers", "WHIP publishers of the open rooms."),
		videoFrames:        d("video_frames_total", "VP8 frames written to rooms."),
		videoKeyframes:     d("video_keyframes_total", "VP8 keyframes written to rooms."),
		audioPackets:       d("audio_packets_total", "Opus packets written to rooms."),
		keyframeRequests:   d("keyframe_requests_total", "Keyframe requests from viewers (PLI, FIR, joins)."),
		keyframesRequested: d("keyframes_requested_total", "Keyframe requests forwarded to encoders after rate limiting."),
		videoBitrate:       d("video_bitrate_bps", "Video bitrate written to the open rooms, summed."),
		audioBitrate:       d("audio_bitrate_bps", "Audio bitrate written to the open rooms, summed."),
		viewerPackets:      d("viewer_packets_sent_total", "RTP packets sent to viewers."),
		viewerBytes:        d("viewer_bytes_sent_total", "RTP bytes (before SRTP) sent to viewers."),
		viewerNACKs:        d("viewer_nacks_received_total", "NACK messages from viewers."),
		viewerNACKed:       d("viewer_nacked_packets_total", "Packets viewers' NACKs asked for."),
		viewerPLIs:         d("viewer_plis_received_total", "PLIs from viewers."),
		viewerFIRs:         d("viewer_firs_received_total", "FIRs from viewers."),
		viewerRTT:          d("viewer_rtt_max_seconds", "Largest round trip time among the connected viewers (per-viewer figures: the stats API)."),
		viewerConnected:    d("viewer_connected", "Viewers whose connection is up."),
	}
}

func (m *metricDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		m.rooms, m.roomViewers, m.roomPublishers, m.videoFrames, m.videoKeyframes, m.audioPackets,
		m.keyframeRequests, m.keyframesRequested, m.videoBitrate, m.audioBitrate,
		m.viewerPackets, m.viewerBytes, m.viewerNACKs, m.viewerNACKed, m.viewerPLIs, m.viewerFIRs,
		m.viewerRTT, m.viewerConnected,
	}
}

// viewerTotals are viewer counters summed.
type viewerTotals struct {
	packets, bytes, nacks, nacked, plis, firs uint64
}

// add adds v's counters (atomics: no lock of v's needed).
func (t *viewerTotals) add(v *viewer) {
	t.packets += v.packets.Load()
	t.bytes += v.bytes.Load()
	t.nacks += v.nacks.Load()
	t.nacked += v.nackedPackets.Load()
	t.plis += v.plis.Load()
	t.firs += v.firs.Load()
}

func (t *viewerTotals) sum(o viewerTotals) {
	t.packets += o.packets
	t.bytes += o.bytes
	t.nacks += o.nacks
	t.nacked += o.nacked
	t.plis += o.plis
	t.firs += o.firs
}

// roomTotals are room counters, including its viewers', summed.
type roomTotals struct {
	videoFrames, videoKeyframes, audioPackets uint64
	keyframeRequests, keyframesRequested      uint64
	viewers                                   viewerTotals
}

func (t *roomTotals) add(o roomTotals) {
	t.videoFrames += o.videoFrames
	t.videoKeyframes += o.videoKeyframes
	t.audioPackets += o.audioPackets
	t.keyframeRequests += o.keyframeRequests
	t.keyframesRequested += o.keyframesRequested
	t.viewers.sum(o.viewers)
}

// totals are the room's counters: its own, its viewers' and its departed
// viewers'.
func (r *Room) totals() roomTotals {
	t := roomTotals{
		videoFrames:    r.videoFrames.Load(),
		videoKeyframes: r.videoKeyframes.Load(),
		audioPackets:   r.audioPackets.Load(),
	}
	t.keyframeRequests, t.keyframesRequested = r.keyframes.counts()
	r.mu.Lock()
	t.viewers = r.departed
	for _, v := range r.viewers {
		t.viewers.add(v)
	}
	r.mu.Unlock()
	return t
}

// Describe implements prometheus.Collector.
func (s *SFU) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range s.metrics.all() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *SFU) Collect(ch chan<- prometheus.Metric) {
	m := s.metrics
	// Counters are read under s.mu, so that a room closing meanwhile is
	// counted exactly once (open or retired).
	s.mu.Lock()
	rooms := make([]*Room, 0, len(s.rooms))
	total := s.retired
	for _, r := range s.rooms {
		rooms = append(rooms, r)
		total.add(r.totals())
	}
	s.mu.Unlock()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(m.videoFrames, total.videoFrames)
	counter(m.videoKeyframes, total.videoKeyframes)
	counter(m.audioPackets, total.audioPackets)
	counter(m.keyframeRequests, total.keyframeRequests)
	counter(m.keyframesRequested, total.keyframesRequested)
	counter(m.viewerPackets, total.viewers.packets)
	counter(m.viewerBytes, total.viewers.bytes)
	counter(m.viewerNACKs, total.viewers.nacks)
	counter(m.viewerNACKed, total.viewers.nacked)
	counter(m.viewerPLIs, total.viewers.plis)
	counter(m.viewerFIRs, total.viewers.firs)

	var viewers, publishers, connected int
	var videoBps, audioBps float64
	var maxRTT time.Duration
	for _, r := range rooms {
		st := r.Stats()
		viewers += len(st.Viewers)
		publishers += st.Publishers
		videoBps += st.VideoBitrateBps
		audioBps += st.AudioBitrateBps
		for _, v := range st.Viewers {
			if v.State == "connected" {
				connected++
				maxRTT = max(maxRTT, v.RTT)
			}
		}
	}
	gauge(m.rooms, float64(len(rooms)))
	gauge(m.roomViewers, float64(viewers))
	gauge(m.roomPublishers, float64(publishers))
	gauge(m.videoBitrate, videoBps)
	gauge(m.audioBitrate, audioBps)
	gauge(m.viewerRTT, maxRTT.Seconds())
	gauge(m.viewerConnected, float64(connected))
}

var _ prometheus.Collector = (*SFU)(nil)
