package mediaruntime

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// metrics are the runtime's Prometheus figures. Session figures are
// aggregated by GPU and avatar, both bounded by the worker's devices and
// avatar packs: a session or viewer id is never a label (unbounded
// cardinality, and ids are for the authenticated stats API only). Counters
// add the figures of live sessions, read at scrape time, to the totals of
// ended ones, so they never go down.
type metrics struct {
	inference, encode, firstFrame                                             *prometheus.HistogramVec
	synthesis                                                                 prometheus.Histogram
	late, skipped                                                             *prometheus.CounterVec
	sessions, contexts, frames, keyframes, inferred, audio, speaking, viewers *prometheus.Desc
	shared                                                                    *prometheus.Desc
	speakingDropped                                                           *prometheus.Desc

	mu    sync.Mutex
	ended map[seriesKey]sendTotals // totals of ended sessions
}

// seriesKey is the label set of the session series.
type seriesKey struct{ gpu, avatar string }

// sendTotals are a session's counters.
type sendTotals struct{ frames, keyframes, inferred, shared, audio uint64 }

func (t *sendTotals) add(st Stats) {
	t.frames += st.Frames
	t.keyframes += st.Keyframes
	t.inferred += st.Inferred
	t.shared += st.Shared
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
		encode: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "avatarfleet_worker_encode_seconds",
			Help:    "Duration of one VP8 encode (one video frame), by GPU.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12), // 0.5 ms .. 1 s
		}, []string{"gpu"}),
		firstFrame: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "avatarfleet_worker_time_to_first_frame_seconds",
			Help:    "Time from the worker starting a session to its first video frame written to the transport, by GPU.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12), // 10 ms .. 20 s
		}, []string{"gpu"}),
		synthesis: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "avatarfleet_worker_tts_latency_seconds",
			Help:    "Time from a text's synthesis start to its first audio (its first sentence).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12), // 10 ms .. 20 s
		}),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "avatarfleet_worker_late_frames_total",
			Help: "Video frames sent behind their time on the media clock, to catch up after a slow tick, by GPU.",
		}, []string{"gpu"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "avatarfleet_worker_skipped_frames_total",
			Help: "Video frames never sent because the media clock stalled longer than the pipeline catches up, by GPU.",
		}, []string{"gpu"}),
		sessions:  prometheus.NewDesc("avatarfleet_worker_sessions", "Sessions running on this worker.", nil, nil),
		contexts:  prometheus.NewDesc("avatarfleet_worker_inference_contexts_created_total", "Inference contexts created (prewarm and pool misses), by GPU.", []string{"gpu"}, nil),
		frames:    desc("avatarfleet_worker_session_video_frames_sent_total", "Video frames sent by sessions, by GPU and avatar."),
		keyframes: desc("avatarfleet_worker_session_video_keyframes_sent_total", "Video keyframes sent by sessions, by GPU and avatar."),
		inferred:  desc("avatarfleet_worker_session_inferred_frames_total", "Video frames rendered by the model (not skipped as silent), by GPU and avatar."),
		shared:    desc("avatarfleet_worker_session_shared_idle_frames_total", "Idle video frames sent from the avatar's shared idle loop (encoded once, not by the session), by GPU and avatar."),
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

// observers returns a session's pipeline hooks for its GPU's series.
func (m *metrics) observers(gpu uint32) (encode func(time.Duration), late func(late, skipped int64), synthesis func(time.Duration)) {
	g := strconv.FormatUint(uint64(gpu), 10)
	h, l, s := m.encode.WithLabelValues(g), m.late.WithLabelValues(g), m.skipped.WithLabelValues(g)
	encode = func(d time.Duration) { h.Observe(d.Seconds()) }
	late = func(n, skipped int64) {
		l.Add(float64(n))
		s.Add(float64(skipped))
	}
	return encode, late, func(d time.Duration) { m.synthesis.Observe(d.Seconds()) }
}

// firstFrameSink observes the time from start to the first video frame
// written through it.
type firstFrameSink struct {
	pipeline.Sink
	start time.Time
	obs   prometheus.Observer
	done  atomic.Bool
}

// timeFirstFrame wraps a session's sink to time its first video frame.
func (m *metrics) timeFirstFrame(sink pipeline.Sink, gpu uint32, start time.Time) pipeline.Sink {
	return &firstFrameSink{Sink: sink, start: start, obs: m.firstFrame.WithLabelValues(strconv.FormatUint(uint64(gpu), 10))}
}

// WriteVideo implements pipeline.Sink.
func (f *firstFrameSink) WriteVideo(s pipeline.Sample) error {
	if !f.done.Load() {
		f.done.Store(true) // only the media goroutine writes
		f.obs.Observe(time.Since(f.start).Seconds())
	}
	return f.Sink.WriteVideo(s)
}

// Describe implements prometheus.Collector.
func (r *Runtime) Describe(ch chan<- *prometheus.Desc) {
	m := r.metrics
	for _, d := range []*prometheus.Desc{m.sessions, m.contexts, m.frames, m.keyframes, m.inferred, m.shared, m.audio, m.speaking, m.viewers, m.speakingDropped} {
		ch <- d
	}
	for _, c := range m.vecs() {
		c.Describe(ch)
	}
}

// vecs are the metrics that collect themselves.
func (m *metrics) vecs() []prometheus.Collector {
	return []prometheus.Collector{m.inference, m.encode, m.firstFrame, m.synthesis, m.late, m.skipped}
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
		ch <- prometheus.MustNewConstMetric(m.shared, prometheus.CounterValue, float64(t.shared), k.gpu, k.avatar)
		ch <- prometheus.MustNewConstMetric(m.audio, prometheus.CounterValue, float64(t.audio), k.gpu, k.avatar)
	}
	for k, n := range speaking {
		ch <- prometheus.MustNewConstMetric(m.speaking, prometheus.GaugeValue, n, k.gpu, k.avatar)
		ch <- prometheus.MustNewConstMetric(m.viewers, prometheus.GaugeValue, viewers[k], k.gpu, k.avatar)
	}
	for _, c := range m.vecs() {
		c.Collect(ch)
	}
}
