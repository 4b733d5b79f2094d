package webhooks

import "github.com/prometheus/client_golang/prometheus"

// Failure reasons (the reason label of avatarfleet_webhook_failures_total).
const (
	reasonStatus    = "status"    // the receiver answered, not with a 2xx
	reasonTransport = "transport" // no answer: connection, TLS, timeout
	reasonOrigin    = "origin"    // the event's origin could not be checked
)

// Metrics are the webhook deliverer's Prometheus metrics. Labels stay
// minimal: no endpoint, owner or session, which would grow without bound
// or name a customer's URL.
type Metrics struct {
	deliveries  prometheus.Counter
	failures    *prometheus.CounterVec
	deadLetters prometheus.Counter
	requests    prometheus.Histogram
	latency     prometheus.Histogram
}

// NewMetrics makes the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "avatarfleet_webhook_deliveries_total",
			Help: "Webhook deliveries a receiver acknowledged with a 2xx.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "avatarfleet_webhook_failures_total",
			Help: "Failed webhook attempts (retried until the last attempt), by reason: status, transport, origin.",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "avatarfleet_webhook_dead_letters_total",
			Help: "Webhook events given up after their last attempt failed.",
		}),
		requests: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "avatarfleet_webhook_request_duration_seconds",
			Help:    "Duration of one webhook POST, whatever its outcome.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "avatarfleet_webhook_delivery_latency_seconds",
			Help:    "Time from an event to the 2xx that delivered it, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12),
		}),
	}
	for _, r := range []string{reasonStatus, reasonTransport, reasonOrigin} {
		m.failures.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.failures, m.deadLetters, m.requests, m.latency)
	}
	return m
}
