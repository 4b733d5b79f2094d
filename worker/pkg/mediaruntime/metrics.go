package mediaruntime

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the runtime's Prometheus figures. Session figures are
// aggregated by GPU and avatar, both bounded by the worker's devices and
// avatar packs: a session or viewer id is never a label (unbounded
// cardinality, and ids are for the authenticated stats API only). Counters
// add the figures of live sessions, read at scrape time, to the totals of
// ended ones, so they never go down.
type metrics struct {
	inference                                                                 *prometheus.HistogramVec
	sessions, contexts, frames, keyframes, inferred, audio, speaking, viewers *prometheus.Desc
	speakingDropped                                                           *prometheus.Desc

	mu    sync.Mutex
	ended map[seriesKey]sendTotals // totals of ended sessions
}

// seriesKey is the label set of the session series.
type seriesKey struct{ gpu, avatar string }

// sendTotals are a session's counters.
type sendTotals struct{ frames, keyframes, inferred, audio uint64 }

func (t *sendTotals) add(st Stats) {
	t.frames += st.Frames
	t.keyframes += st.Keyframes
	t.inferred += st.Inferred
	t.audio += st.AudioPackets
}

// retire adds a removed session's figures to the ended totals. It keeps
// numbers, never the session: a session kept until the next scrape would
// hold its pipeline, encoders and buffers (a worker nobody scrapes would
// keep every session it ever ran). m.mu is taken under the runtime's lock;
// Collect never takes them the other way round.
func (m *metrics) retire(s *session) {
	k, st := keyOf(s), s.stats()
	m.mu.Lock()
	t := m.ended[k]
	t.add(st)
	m.ended[k] = t
	m.mu.Unlock()
}

func keyOf(s *session) seriesKey {
	return seriesKey{strconv.FormatUint(uint64(s.sess.GetGpu()), 10), s.sess.GetAvatar()}
}

func newMetrics() *metrics {
	labels := []string{"gpu", "avatar"}
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, labels, nil) }
	return &metrics{
		inference: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "avatarfleet_worker_inference_seconds",
			Help:    "Duration of one lip-sync model run (one video frame), by GPU.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 10), // 1 ms .. 512 ms
		}, []string{"gpu"}),
		sessions:  prometheus.NewDesc("avatarfleet_worker_sessions", "Sessions running on this worker.", nil, nil),
		contexts:  prometheus.NewDesc("avatarfleet_worker_inference_contexts_created_total", "Inference contexts created (prewarm and pool misses), by GPU.", []string{"gpu"}, nil),
		frames:    desc("avatarfleet_worker_session_video_frames_sent_total", "Video frames sent by sessions, by GPU and avatar."),
		keyframes: desc("avatarfleet_worker_session_video_keyframes_sent_total", "Video keyframes sent by sessions, by GPU and avatar."),
		inferred:  desc("avatarfleet_worker_session_inferred_frames_total", "Video frames rendered by the model (not skipped as silent), by GPU and avatar."),
		audio:     desc("avatarfleet_worker_session_audio_packets_sent_total", "Opus packets sent by sessions, by GPU and avatar."),
		speaking:  desc("avatarfleet_worker_session_speaking", "Sessions whose avatar speaks, by GPU and avatar."),
		viewers:   desc("avatarfleet_worker_session_viewers", "Viewers of live sessions, as their transports report them, by GPU and avatar."),
		speakingDropped: prometheus.NewDesc("avatarfleet_worker_speaking_events_dropped_total",
			"Speaking changes dropped because the worker did not read them fast enough (their events are lost).", nil, nil),
		ended: map[seriesKey]sendTotals{},
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
	m.mu.Lock()
	totals := make(map[seriesKey]sendTotals, len(m.ended))
	for k, t := range m.ended {
		totals[k] = t
	}
	m.mu.Unlock()
	speaking, viewers := map[seriesKey]float64{}, map[seriesKey]float64{}
	for _, s := range live {
		k, st := keyOf(s), s.stats()
		t := totals[k]
		t.add(st)
		totals[k] = t
		n := speaking[k] // the key exists even when none speaks
		if st.Speaking {
			n++
		}
		speaking[k] = n
		viewers[k] += float64(st.Viewers)
	}
	for k, t := range totals {
		ch <- prometheus.MustNewConstMetric(m.frames, prometheus.CounterValue, float64(t.frames), k.gpu, k.avatar)
		ch <- prometheus.MustNewConstMetric(m.keyframes, prometheus.CounterValue, float64(t.keyframes), k.gpu, k.avatar)
		ch <- prometheus.MustNewConstMetric(m.inferred, prometheus.CounterValue, float64(t.inferred), k.gpu, k.avatar)
		ch <- prometheus.MustNewConstMetric(m.audio, prometheus.CounterValue, float64(t.audio), k.gpu, k.avatar)
	}
	for k, n := range speaking {
		ch <- prometheus.MustNewConstMetric(m.speaking, prometheus.GaugeValue, n, k.gpu, k.avatar)
		ch <- prometheus.MustNewConstMetric(m.viewers, prometheus.GaugeValue, viewers[k], k.gpu, k.avatar)
	}
	r.metrics.inference.Collect(ch)
}
