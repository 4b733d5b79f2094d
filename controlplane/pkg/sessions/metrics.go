package sessions

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Metrics are the placement figures a replica exports.
type Metrics struct {
	placements *prometheus.HistogramVec
	conflicts  prometheus.Counter
	ended      *prometheus.CounterVec
	replaced   *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		placements: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "avatarfleet_placement_duration_seconds",
			Help:    "Time from a create request to its outcome (placed, no_capacity, rejected, error).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"result"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "avatarfleet_placement_conflicts_total",
			Help: "Slot reservations that lost a race and were retried elsewhere.",
		}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "avatarfleet_sessions_ended_total",
			Help: "Sessions ended through this replica, by reason.",
		}, []string{"reason"}),
		replaced: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "avatarfleet_replacement_duration_seconds",
			Help:    "Time from a worker's loss being seen to its session's re-placement outcome (ready, failed).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, []string{"result"}),
	}
	// The re-placement outcomes exist at 0 before a worker is ever lost, so
	// that dashboards and alerts find their series.
	for _, r := range []string{"ready", "failed"} {
		m.replaced.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.placements, m.conflicts, m.ended, m.replaced)
	}
	return m
}

func (m *Metrics) placement(result string, start time.Time) {
	m.placements.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

// replacement records a re-placement's outcome, timed from the loss.
func (m *Metrics) replacement(result string, lostAt *timestamppb.Timestamp) {
	if lostAt == nil {
		return
	}
	m.replaced.WithLabelValues(result).Observe(time.Since(lostAt.AsTime()).Seconds())
}
