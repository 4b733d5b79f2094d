package eventlog

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the event log's figures: how far it got and what it costs to
// get there. Only the leader's move.
type Metrics struct {
	published prometheus.Counter
	failures  prometheus.Counter
	revision  prometheus.Gauge
	resyncs   prometheus.Counter
}

// NewMetrics creates the metrics and registers them on reg (nil:
// unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "avatarfleet_eventlog_published_total",
			Help: "Lifecycle events derived from etcd and acknowledged by the stream (by this replica while it led).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "avatarfleet_eventlog_publish_failures_total",
			Help: "Publish attempts of derived events that failed and were retried (NATS unreachable, say).",
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "avatarfleet_eventlog_revision",
			Help: "The etcd revision whose events this replica published last.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "avatarfleet_eventlog_resyncs_total",
			Help: "Times the event log announced the present from a listing because etcd had compacted where it stopped.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.failures, m.revision, m.resyncs)
	}
	return m
}
