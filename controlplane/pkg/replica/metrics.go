package replica

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
)

const (
	// sessionsListTimeout bounds the etcd listing a scrape may trigger.
	sessionsListTimeout = 2 * time.Second
	// sessionsListEvery is how long a listing's counts are served before a
	// scrape lists again: a busy Prometheus (or several) never costs etcd
	// more than one listing per replica per period.
	sessionsListEvery = 5 * time.Second
)

// sessionStates are the state label's values, every one exported (0 when
// none) so that a series never vanishes.
var sessionStates = []fleetv1.SessionState{
	fleetv1.SessionState_SESSION_STATE_PLACING, fleetv1.SessionState_SESSION_STATE_STARTING,
	fleetv1.SessionState_SESSION_STATE_READY, fleetv1.SessionState_SESSION_STATE_ENDED,
	fleetv1.SessionState_SESSION_STATE_FAILED,
}

// stateName is a session state as a label value: "ready", "ended".
func stateName(s fleetv1.SessionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SESSION_STATE_"))
}

// sessionLister lists the session records (fleetstore.Store.Sessions).
type sessionLister interface {
	Sessions(ctx context.Context) ([]fleetstore.SessionEntry, error)
}

// fleetCollector exports the fleet as this replica's cache sees it: each
// worker GPU's slots and how many are reserved, workers by state, and
// session records by state. Every replica exports the same figures (the
// dashboard takes the max across replicas). Labels are bounded by the
// fleet's size: worker ids and GPU indexes, never a session.
type fleetCollector struct {
	reg      *registry.Registry
	sessions sessionLister
	log      *slog.Logger
	now      func() time.Time

	slots, used, workers, states *prometheus.Desc

	mu       sync.Mutex
	listedAt time.Time
	counts   map[fleetv1.SessionState]int
	ok       bool // counts hold a successful listing
}

func newFleetCollector(reg *registry.Registry, sessions sessionLister, log *slog.Logger) *fleetCollector {
	return &fleetCollector{reg: reg, sessions: sessions, log: log, now: time.Now,
		slots: prometheus.NewDesc("avatarfleet_fleet_gpu_slots",
			"Session slots of each registered worker's GPU.", []string{"worker", "gpu"}, nil),
		used: prometheus.NewDesc("avatarfleet_fleet_gpu_slots_used",
			"Reserved session slots of each registered worker's GPU.", []string{"worker", "gpu"}, nil),
		workers: prometheus.NewDesc("avatarfleet_fleet_workers",
			"Registered workers by state: active, draining, down.", []string{"state"}, nil),
		states: prometheus.NewDesc("avatarfleet_sessions",
			"Session records in etcd by state (placing, starting, ready, ended, failed); listed at most every 5 s.", []string{"state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.slots, c.used, c.workers, c.states} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	byState := map[string]int{"active": 0, "draining": 0, "down": 0}
	for _, w := range c.reg.Workers() {
		switch {
		case w.Down || w.Worker.GetState() == fleetv1.WorkerState_WORKER_STATE_DOWN:
			byState["down"]++
		case w.Draining():
			byState["draining"]++
		default:
			byState["active"]++
		}
		id := w.Worker.GetId()
		for _, g := range w.Worker.GetGpus() {
			gpu := strconv.FormatUint(uint64(g.GetIndex()), 10)
			ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(g.GetSlots()), id, gpu)
			ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(w.UsedOn(g.GetIndex())), id, gpu)
		}
	}
	for state, n := range byState {
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(n), state)
	}
	counts, ok := c.sessionCounts()
	if !ok {
		return // no listing yet: no series rather than a false zero
	}
	for _, s := range sessionStates {
		ch <- prometheus.MustNewConstMetric(c.states, prometheus.GaugeValue, float64(counts[s]), stateName(s))
	}
}

// sessionCounts returns the session records by state, listing them again
// when the last listing is older than sessionsListEvery. A failed listing
// keeps the last counts (and is logged).
func (c *fleetCollector) sessionCounts() (map[fleetv1.SessionState]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok && c.now().Sub(c.listedAt) < sessionsListEvery {
		return c.counts, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionsListTimeout)
	defer cancel()
	entries, err := c.sessions.Sessions(ctx)
	if err != nil {
		c.log.Warn("metrics: list sessions by state", "err", err)
		return c.counts, c.ok
	}
	counts := make(map[fleetv1.SessionState]int, len(sessionStates))
	for _, e := range entries {
		counts[e.Session.GetState()]++
	}
	c.counts, c.listedAt, c.ok = counts, c.now(), true
	return counts, true
}

var _ prometheus.Collector = (*fleetCollector)(nil)
