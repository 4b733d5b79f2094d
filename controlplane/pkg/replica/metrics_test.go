package replica

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
)

// fakeLister is a session listing for unit tests (the e2e test
// observability lists a real etcd through the running control plane).
type fakeLister struct {
	states []fleetv1.SessionState
	err    error
	calls  int
}

func (f *fakeLister) Sessions(context.Context) ([]fleetstore.SessionEntry, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := make([]fleetstore.SessionEntry, len(f.states))
	for i, s := range f.states {
		out[i] = fleetstore.SessionEntry{Session: &fleetv1.Session{State: s}}
	}
	return out, nil
}

// TestSessionsByState: the collector counts session records by state,
// lists at most once per sessionsListEvery, keeps the last counts when a
// listing fails, and exports no sessions series before its first listing.
func TestSessionsByState(t *testing.T) {
	ready, ended := fleetv1.SessionState_SESSION_STATE_READY, fleetv1.SessionState_SESSION_STATE_ENDED
	lister := &fakeLister{err: errors.New("etcd down")}
	// An empty registry (never run: no etcd behind the store).
	reg0 := registry.New(fleetstore.New(nil, fleetstore.NewKeys("/t/")), slog.New(slog.DiscardHandler))
	c := newFleetCollector(reg0, lister, slog.New(slog.DiscardHandler))
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	steps := []struct {
		name    string
		advance time.Duration
		states  []fleetv1.SessionState
		err     error
		calls   int
		want    string // avatarfleet_sessions series, "" for none
	}{
		{"no listing yet", 0, nil, errors.New("etcd down"), 1, ""},
		{"first listing", 0, []fleetv1.SessionState{ready, ready, ended}, nil, 2, "ready 2 ended 1 placing 0"},
		{"cached", sessionsListEvery / 2, []fleetv1.SessionState{ended}, nil, 2, "ready 2 ended 1"},
		{"listed again", sessionsListEvery, []fleetv1.SessionState{ended}, nil, 3, "ready 0 ended 1"},
		{"failed listing keeps the last", sessionsListEvery, nil, errors.New("timeout"), 4, "ready 0 ended 1"},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		lister.states, lister.err = s.states, s.err
		got := sessionsSeries(t, reg)
		if lister.calls != s.calls {
			t.Errorf("%s: %d listings, want %d", s.name, lister.calls, s.calls)
		}
		if s.want == "" {
			if len(got) != 0 {
				t.Errorf("%s: series %v, want none", s.name, got)
			}
			continue
		}
		if len(got) != len(sessionStates) {
			t.Errorf("%s: series %v, want all %d states", s.name, got, len(sessionStates))
		}
		f := strings.Fields(s.want)
		for i := 0; i+1 < len(f); i += 2 {
			if v, ok := got[f[i]]; !ok || strconv.FormatFloat(v, 'f', -1, 64) != f[i+1] {
				t.Errorf("%s: %s = %v, want %s (series %v)", s.name, f[i], v, f[i+1], got)
			}
		}
	}
}

// sessionsSeries gathers once and returns avatarfleet_sessions by state.
func sessionsSeries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "avatarfleet_sessions" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}
