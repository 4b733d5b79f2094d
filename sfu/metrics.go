package sfu

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metricDescs are the SFU's Prometheus metrics. Room metrics carry the
// session label; viewer metrics session and viewer.
type metricDescs struct {
	rooms, roomViewers, roomPublishers                    *prometheus.Desc
	videoFrames, videoKeyframes, audioPackets             *prometheus.Desc
	keyframeRequests, keyframesRequested                  *prometheus.Desc
	videoBitrate, audioBitrate                            *prometheus.Desc
	viewerPackets, viewerBytes, viewerNACKs, viewerNACKed *prometheus.Desc
	viewerPLIs, viewerFIRs, viewerRTT, viewerConnected    *prometheus.Desc
}

func newMetricDescs() *metricDescs {
	room := []string{"session"}
	viewer := []string{"session", "viewer"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("avatarfleet_sfu_"+name, help, labels, nil)
	}
	return &metricDescs{
		rooms:              d("rooms", "Open rooms (sessions with media).", nil),
		roomViewers:        d("room_viewers", "Viewers of the room, connecting or connected.", room),
		roomPublishers:     d("room_publishers", "WHIP publishers of the room.", room),
		videoFrames:        d("video_frames_total", "VP8 frames written to the room.", room),
		videoKeyframes:     d("video_keyframes_total", "VP8 keyframes written to the room.", room),
		audioPackets:       d("audio_packets_total", "Opus packets written to the room.", room),
		keyframeRequests:   d("keyframe_requests_total", "Keyframe requests from viewers (PLI, FIR, joins).", room),
		keyframesRequested: d("keyframes_requested_total", "Keyframe requests forwarded to the encoder after rate limiting.", room),
		videoBitrate:       d("video_bitrate_bps", "Video bitrate written to the room.", room),
		audioBitrate:       d("audio_bitrate_bps", "Audio bitrate written to the room.", room),
		viewerPackets:      d("viewer_packets_sent_total", "RTP packets sent to the viewer.", viewer),
		viewerBytes:        d("viewer_bytes_sent_total", "RTP bytes (before SRTP) sent to the viewer.", viewer),
		viewerNACKs:        d("viewer_nacks_received_total", "NACK messages from the viewer.", viewer),
		viewerNACKed:       d("viewer_nacked_packets_total", "Packets the viewer's NACKs asked for.", viewer),
		viewerPLIs:         d("viewer_plis_received_total", "PLIs from the viewer.", viewer),
		viewerFIRs:         d("viewer_firs_received_total", "FIRs from the viewer.", viewer),
		viewerRTT:          d("viewer_rtt_seconds", "Round trip time from the viewer's receiver reports.", viewer),
		viewerConnected:    d("viewer_connected", "1 while the viewer's connection is up.", viewer),
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

// Describe implements prometheus.Collector.
func (s *SFU) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range s.metrics.all() {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one sample of every room and
// viewer metric per open room and viewer.
func (s *SFU) Collect(ch chan<- prometheus.Metric) {
	m := s.metrics
	rooms := s.openRooms()
	ch <- prometheus.MustNewConstMetric(m.rooms, prometheus.GaugeValue, float64(len(rooms)))
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range rooms {
		st := r.Stats()
		id := r.id
		gauge(m.roomViewers, float64(len(st.Viewers)), id)
		gauge(m.roomPublishers, float64(st.Publishers), id)
		counter(m.videoFrames, st.VideoFramesSent, id)
		counter(m.videoKeyframes, st.VideoKeyframesSent, id)
		counter(m.audioPackets, st.AudioPacketsSent, id)
		counter(m.keyframeRequests, st.KeyframeRequests, id)
		counter(m.keyframesRequested, st.KeyframesRequested, id)
		gauge(m.videoBitrate, st.VideoBitrateBps, id)
		gauge(m.audioBitrate, st.AudioBitrateBps, id)
		for _, v := range st.Viewers {
			counter(m.viewerPackets, v.PacketsSent, id, v.ID)
			counter(m.viewerBytes, v.BytesSent, id, v.ID)
			counter(m.viewerNACKs, v.NACKsReceived, id, v.ID)
			counter(m.viewerNACKed, v.NACKedPackets, id, v.ID)
			counter(m.viewerPLIs, v.PLIsReceived, id, v.ID)
			counter(m.viewerFIRs, v.FIRsReceived, id, v.ID)
			gauge(m.viewerRTT, v.RTT.Seconds(), id, v.ID)
			up := 0.0
			if v.State == "connected" {
				up = 1
			}
			gauge(m.viewerConnected, up, id, v.ID)
		}
	}
}

var _ prometheus.Collector = (*SFU)(nil)
