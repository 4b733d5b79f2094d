package eventlog_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"google.golang.org/protobuf/proto"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/eventlog"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/embedded/embeddedtest"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// rig is etcd and NATS for event logs to run against.
type rig struct {
	t     *testing.T
	ctx   context.Context
	cli   *clientv3.Client
	store *fleetstore.Store
	nats  *embedded.NATSServer
	nc    *nats.Conn
	pub   *fleetbus.Publisher
	log   *slog.Logger
	// metrics of each log started, by name
	metrics map[string]*eventlog.Metrics
	regs    map[string]*prometheus.Registry
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	_, cli := embeddedtest.Etcd(t)
	ns, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, err := fleetbus.NewPublisher(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fleetbus.EnsureStream(ctx, pub.JetStream(), time.Hour); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("EVENTLOG_VERBOSE") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return &rig{t: t, ctx: ctx, cli: cli, store: fleetstore.New(cli, fleetstore.NewKeys("/el/")), nats: ns, nc: nc, pub: pub, log: log,
		metrics: map[string]*eventlog.Metrics{}, regs: map[string]*prometheus.Registry{}}
}

// start runs an event log (a leader) until the returned stop is called.
func (r *rig) start(name string) (stop func()) {
	ctx, cancel := context.WithCancel(r.ctx)
	reg := prometheus.NewRegistry()
	r.metrics[name] = eventlog.NewMetrics(reg)
	r.regs[name] = reg
	l := eventlog.New(eventlog.Options{Store: r.store, Bus: r.pub, Log: r.log.With("leader", name), Metrics: r.metrics[name],
		PublishTimeout: 500 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.Run(ctx); err != nil {
			r.t.Errorf("event log %s: %v", name, err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	r.t.Cleanup(stop)
	return stop
}

func (r *rig) put(key string, m proto.Message) int64 {
	r.t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := r.cli.Put(r.ctx, key, string(b))
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (r *rig) session(id string, state fleetv1.SessionState) int64 {
	return r.put(r.store.Keys().Session(id), &fleetv1.Session{Id: id, Owner: "o", WorkerId: "w1", State: state})
}

// metric is the value of a counter or gauge of reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// warmUp returns once a running log publishes: with an empty stream, a log
// starts from the present, so what it has not listed yet is not announced.
func (r *rig) warmUp() {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	state := fleetv1.SessionState_SESSION_STATE_STARTING
	for len(r.read(true)) == 0 {
		if time.Now().After(deadline) {
			r.t.Fatal("the event log publishes nothing")
		}
		r.session("warm", state)
		state = 5 - state // starting ↔ ready: a change each time
		time.Sleep(200 * time.Millisecond)
	}
}

// stored is one message of the stream.
type stored struct {
	seq uint64
	e   *fleetv1.Event
}

// readAll reads every derived event the stream holds, in stream order.
func (r *rig) readAll() []stored { return r.read(false) }

// read reads the derived events, with those of the warm-up session if all.
func (r *rig) read(all bool) []stored {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
	defer cancel()
	cons, err := r.pub.JetStream().OrderedConsumer(ctx, fleetbus.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []stored
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			r.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				r.t.Fatal(err)
			}
			e, err := fleetbus.DecodeEvent(m.Data())
			if err != nil {
				r.t.Fatal(err)
			}
			if e.GetRevision() > 0 && (all || e.GetSessionId() != "warm") {
				out = append(out, stored{meta.Sequence.Stream, e})
			}
		}
		if batch.Error() != nil {
			r.t.Fatal(batch.Error())
		}
		if n == 0 {
			return out
		}
	}
}

// waitFor polls the stream until cond holds of it.
func (r *rig) waitFor(timeout time.Duration, what string, cond func([]stored) bool) []stored {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := r.readAll()
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Errorf("timed out waiting for %s; the stream holds %d derived events", what, len(got))
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkLog checks that every event's id is its mark's, none repeats, they
// are in revision order, and each session went starting → ready → ended.
func checkLog(t *testing.T, got []stored, sessions int) {
	t.Helper()
	seen := map[string]bool{}
	per := map[string][]string{}
	var last fleetbus.Mark
	for i, s := range got {
		e := s.e
		if seen[e.GetId()] {
			t.Errorf("event %s (%s) stored twice", e.GetId(), e.GetType())
		}
		seen[e.GetId()] = true
		var m fleetbus.Mark
		if _, err := fmt.Sscanf(e.GetId(), "%d-%d", &m.Revision, &m.Index); err != nil || m.Revision != e.GetRevision() {
			t.Errorf("event id %q does not name revision %d", e.GetId(), e.GetRevision())
		}
		if i > 0 && !last.Before(m) {
			t.Errorf("event %s stored after %s", e.GetId(), last.EventID())
		}
		last = m
		per[e.GetSessionId()] = append(per[e.GetSessionId()], e.GetType())
	}
	want := fmt.Sprint([]string{fleetbus.SessionStarting, fleetbus.SessionReady, fleetbus.SessionEnded})
	for i := range sessions {
		id := fmt.Sprintf("s%03d", i)
		if got := fmt.Sprint(per[id]); got != want {
			t.Errorf("session %s: events %s, want %s", id, got, want)
		}
	}
}

// TestNothingLostOrDuplicated: sessions churn in etcd while NATS goes away
// and comes back, while a second leader takes over (both publishing for a
// moment, as a deposed leader may) and while no leader runs at all; the
// stream ends up with every event once, in revision order.
func TestNothingLostOrDuplicated(t *testing.T) {
	r := newRig(t)
	stopA := r.start("a")
	r.warmUp()
	var stopB, stopC func()
	const n = 40
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("s%03d", i)
		r.session(id, fleetv1.SessionState_SESSION_STATE_STARTING)
		r.session(id, fleetv1.SessionState_SESSION_STATE_READY)
		r.session(id, fleetv1.SessionState_SESSION_STATE_ENDED)
		switch i {
		case 5:
			r.nats.Stop()
		case 20: // an outage longer than a publish attempt
			if err := r.nats.Restart(); err != nil {
				t.Fatal(err)
			}
		case 24:
			stopB = r.start("b")
		case 26:
			stopA()
		case 30:
			stopB()
		case 34:
			stopC = r.start("c")
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := r.waitFor(60*time.Second, "every session's three events", func(s []stored) bool { return len(s) >= 3*n })
	t.Logf("%d events through a NATS outage and two leader changes in %s", len(got), time.Since(start).Round(time.Millisecond))
	checkLog(t, got, n)
	var published, failures float64
	for _, name := range []string{"a", "b", "c"} {
		published += metric(t, r.regs[name], "avatarfleet_eventlog_published_total")
		failures += metric(t, r.regs[name], "avatarfleet_eventlog_publish_failures_total")
	}
	// Leaders that overlapped both count what the stream kept once.
	if published < float64(len(got)) || failures == 0 {
		t.Errorf("metrics: %v published, %v failed attempts; want ≥ %d and some failures in the outage", published, failures, len(got))
	}
	stopC()
	// A leader that starts after everything was published adds nothing.
	stopD := r.start("d")
	r.session("s000", fleetv1.SessionState_SESSION_STATE_ENDED) // no state change: no event
	time.Sleep(time.Second)
	stopD()
	if again := r.readAll(); len(again) != len(got) {
		t.Errorf("a new leader published %d more events", len(again)-len(got))
	}
}

// TestResyncAfterCompaction: when etcd compacted the revision the stream
// stops at, a new leader announces what changed since from a listing, then
// follows etcd as usual.
func TestResyncAfterCompaction(t *testing.T) {
	r := newRig(t)
	keys := r.store.Keys()
	stop := r.start("a")
	r.warmUp()
	lease, err := r.cli.Grant(r.ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&fleetv1.Worker{Id: "w1", State: fleetv1.WorkerState_WORKER_STATE_ACTIVE})
	if _, err := r.cli.Put(r.ctx, keys.Worker("w1"), string(b), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	r.session("s1", fleetv1.SessionState_SESSION_STATE_READY)
	r.session("s2", fleetv1.SessionState_SESSION_STATE_STARTING)
	before := r.waitFor(20*time.Second, "the first events", func(s []stored) bool { return len(s) == 3 })
	stop()

	r.session("s1", fleetv1.SessionState_SESSION_STATE_ENDED)
	r.session("s3", fleetv1.SessionState_SESSION_STATE_STARTING)
	rev := r.session("s3", fleetv1.SessionState_SESSION_STATE_READY)
	if _, err := r.cli.Revoke(r.ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Compact(r.ctx, rev+1); err != nil {
		t.Fatal(err)
	}
	r.start("b")
	got := r.waitFor(20*time.Second, "the resync's events", func(s []stored) bool { return len(s) == len(before)+3 })
	var types []string
	for _, s := range got[len(before):] {
		types = append(types, s.e.GetType()+" "+s.e.GetSessionId()+s.e.GetWorkerId())
	}
	want := []string{"session.ended s1w1", "session.ready s3w1", "worker.lost w1"}
	if fmt.Sprint(types) != fmt.Sprint(want) {
		t.Fatalf("resync announced %v, want %v", types, want)
	}
	r.session("s2", fleetv1.SessionState_SESSION_STATE_READY)
	got = r.waitFor(20*time.Second, "a change after the resync", func(s []stored) bool { return len(s) == len(before)+4 })
	if e := got[len(got)-1].e; e.GetType() != fleetbus.SessionReady || e.GetSessionId() != "s2" {
		t.Fatalf("after the resync: %s %s, want session.ready s2", e.GetType(), e.GetSessionId())
	}
}

// TestMovedEvent: a record that comes back READY on another worker with a
// move counted is announced as session.moved with where from, where to and
// why, after its session.ready.
func TestMovedEvent(t *testing.T) {
	r := newRig(t)
	r.start("a")
	r.warmUp()
	key := r.store.Keys().Session("m1")
	r.put(key, &fleetv1.Session{Id: "m1", Owner: "o", WorkerId: "w1", State: fleetv1.SessionState_SESSION_STATE_READY})
	r.put(key, &fleetv1.Session{Id: "m1", Owner: "o", WorkerId: "w1", State: fleetv1.SessionState_SESSION_STATE_PLACING})
	r.put(key, &fleetv1.Session{Id: "m1", Owner: "o", WorkerId: "w2", State: fleetv1.SessionState_SESSION_STATE_STARTING,
		Moves: 1, MovedFrom: "w1", MoveReason: "worker_lost"})
	rev := r.put(key, &fleetv1.Session{Id: "m1", Owner: "o", WorkerId: "w2", State: fleetv1.SessionState_SESSION_STATE_READY,
		Moves: 1, MovedFrom: "w1", MoveReason: "worker_lost"})
	got := r.waitFor(20*time.Second, "the move", func(s []stored) bool { return len(s) == 5 })
	var types []string
	for _, s := range got {
		types = append(types, s.e.GetType())
	}
	want := []string{"session.ready", "session.placing", "session.starting", "session.ready", "session.moved"}
	if fmt.Sprint(types) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	moved := got[4].e
	if moved.GetFromWorker() != "w1" || moved.GetToWorker() != "w2" || moved.GetReason() != "worker_lost" ||
		moved.GetId() != fmt.Sprintf("%d-1", rev) || moved.GetSession().GetWorkerId() != "w2" {
		t.Fatalf("moved event %v", moved)
	}
}
