package mediaruntime

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the runtime's Prometheus figures. Per-session series are
// read from the live sessions at scrape time, so an ended session's series
// vanish with it.
type metrics struct {
	inference                                                                 *prometheus.HistogramVec
	sessions, contexts, frames, keyframes, inferred, audio, speaking, viewers *prometheus.Desc
	speakingDropped                                                           *prometheus.Desc
}

func newMetrics() *metrics {
	labels := []string{"session", "gpu", "slot", "avatar"}
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, labels, nil) }
	return &metrics{
		inference: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "avatarfleet_worker_inference_seconds",
			Help:    "Duration of one lip-sync model run (one video frame), by GPU.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 10), // 1 ms .. 512 ms
		}, []string{"gpu"}),
		sessions:  prometheus.NewDesc("avatarfleet_worker_sessions", "Sessions running on this worker.", nil, nil),
		contexts:  prometheus.NewDesc("avatarfleet_worker_inference_contexts_created_total", "Inference contexts created (prewarm and pool misses), by GPU.", []string{"gpu"}, nil),
		frames:    desc("avatarfleet_worker_session_video_frames_sent_total", "Video frames sent by a session."),
		keyframes: desc("avatarfleet_worker_session_video_keyframes_sent_total", "Video keyframes sent by a session."),
		inferred:  desc("avatarfleet_worker_session_inferred_frames_total", "Video frames of a session rendered by the model (not skipped as silent)."),
		audio:     desc("avatarfleet_worker_session_audio_packets_sent_total", "Opus packets sent by a session."),
		speaking:  desc("avatarfleet_worker_session_speaking", "1 while a session's avatar speaks."),
		viewers:   desc("avatarfleet_worker_session_viewers", "Viewers of a session, as its transport reports them."),
		speakingDropped: prometheus.NewDesc("avatarfleet_worker_speaking_events_dropped_total",
			"Speaking changes dropped because the worker did not read them fast enough (their events are lost).", nil, nil),
	}
}

// observer is a pipeline's ObserveInference for a GPU.
func (m *metrics) observer(gpu uint32) func(time.Duration) {
	h := m.inference.WithLabelValues(strconv.FormatUint(uint64(gpu), 10))
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}

// Describe implements prometheus.Collector.
func (r *Runtime) Describe(ch chan<- *prometheus.Desc) {
	m := r.metrics
	for _, d := range []*prometheus.Desc{m.sessions, m.contexts, m.frames, m.keyframes, m.inferred, m.audio, m.speaking, m.viewers, m.speakingDropped} {
		ch <- d
	}
	r.metrics.inference.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Runtime) Collect(ch chan<- prometheus.Metric) {
	m := r.metrics
	r.mu.Lock()
	live := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		live = append(live, s)
	}
	r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.sessions, prometheus.GaugeValue, float64(len(live)))
	ch <- prometheus.MustNewConstMetric(m.speakingDropped, prometheus.CounterValue, float64(r.speakingDropped.Load()))
	for gpu, p := range r.pools {
		ch <- prometheus.MustNewConstMetric(m.contexts, prometheus.CounterValue, float64(p.created.Load()), strconv.FormatUint(uint64(gpu), 10))
	}
	for _, s := range live {
		st := s.stats()
		lv := []string{s.sess.GetId(), strconv.FormatUint(uint64(s.sess.GetGpu()), 10), strconv.FormatUint(uint64(s.sess.GetSlot()), 10), s.sess.GetAvatar()}
		speaking := 0.0
		if st.Speaking {
			speaking = 1
		}
		ch <- prometheus.MustNewConstMetric(m.frames, prometheus.CounterValue, float64(st.Frames), lv...)
		ch <- prometheus.MustNewConstMetric(m.keyframes, prometheus.CounterValue, float64(st.Keyframes), lv...)
		ch <- prometheus.MustNewConstMetric(m.inferred, prometheus.CounterValue, float64(st.Inferred), lv...)
		ch <- prometheus.MustNewConstMetric(m.audio, prometheus.CounterValue, float64(st.AudioPackets), lv...)
		ch <- prometheus.MustNewConstMetric(m.speaking, prometheus.GaugeValue, speaking, lv...)
		ch <- prometheus.MustNewConstMetric(m.viewers, prometheus.GaugeValue, float64(st.Viewers), lv...)
	}
	r.metrics.inference.Collect(ch)
}
