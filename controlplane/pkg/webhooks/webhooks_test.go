package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/httpapi"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// waitConsumer waits until the endpoint's durable consumer exists: it
// starts at the next event.
func waitConsumer(t *testing.T, b *bus, ep Endpoint) {
	t.Helper()
	eventually(t, "the webhook consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := b.js.Consumer(ctx, fleetbus.StreamName, ConsumerName(ep.Owner, ep.URL))
		return err == nil
	})
}

func TestDeliveredOnceAfterThreeFailures(t *testing.T) {
	b := newBus(t)
	rc := newReceiver(t, func(_ string, n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	sec, key := secret(1)
	ep := Endpoint{Owner: "owner-a", URL: rc.URL + "/hook?token=x", Secret: key}
	opts := fastOptions(b, ep)
	r, _ := start(t, opts)
	waitConsumer(t, b, ep)

	e := b.publish(t, fleetbus.SessionReady, "s1", "owner-a")
	eventually(t, "a 2xx delivery", func() bool { _, _, ok := rc.snapshot(); return ok[e.GetId()] == 1 })
	eventually(t, "the consumer to settle", func() bool { return settled(t, b, ep) })
	time.Sleep(300 * time.Millisecond) // longer than the retry cap: no late attempt
	got, tries, ok := rc.snapshot()
	if tries[e.GetId()] != 4 || ok[e.GetId()] != 1 || len(got) != 4 {
		t.Fatalf("attempts %v, 2xx %v, requests %d: want 4 attempts, one 2xx", tries, ok, len(got))
	}
	want, err := httpapi.EventJSON(e, "")
	if err != nil {
		t.Fatal(err)
	}
	for i, req := range got {
		if !bytes.Equal(req.body, want) {
			t.Errorf("attempt %d body %s, want the event stream's JSON %s", i+1, req.body, want)
		}
		if req.header.Get(HeaderID) != e.GetId() || req.header.Get("Content-Type") != "application/json" {
			t.Errorf("attempt %d: webhook-id %q content-type %q", i+1, req.header.Get(HeaderID), req.header.Get("Content-Type"))
		}
		if err := Verify(sec, req.header, req.body, 0); err != nil {
			t.Errorf("attempt %d: signature does not verify: %v", i+1, err)
		}
	}
	last := got[len(got)-1]
	tampered := bytes.Replace(last.body, []byte(`"s1"`), []byte(`"s2"`), 1)
	if err := Verify(sec, last.header, tampered, 0); !errors.Is(err, ErrSignature) {
		t.Errorf("tampered body: %v, want ErrSignature", err)
	}
	h := last.header.Clone()
	ts, _ := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts+1, 10))
	if err := Verify(sec, h, last.body, 0); !errors.Is(err, ErrSignature) {
		t.Errorf("tampered timestamp: %v, want ErrSignature", err)
	}
	other, _ := secret(2)
	if err := Verify(other, last.header, last.body, 0); !errors.Is(err, ErrSignature) {
		t.Errorf("another endpoint's secret: %v, want ErrSignature", err)
	}
	m := r.metrics
	if d, f, dl := testutil.ToFloat64(m.deliveries), testutil.ToFloat64(m.failures.WithLabelValues(reasonStatus)), testutil.ToFloat64(m.deadLetters); d != 1 || f != 3 || dl != 0 {
		t.Errorf("deliveries %v, status failures %v, dead letters %v: want 1, 3, 0", d, f, dl)
	}
	if n := testutil.CollectAndCount(m.requests); n != 1 {
		t.Errorf("request histogram: %d series", n)
	}
}

func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	b := newBus(t)
	rc := newReceiver(t, always(http.StatusInternalServerError))
	// A receiver that redirects elsewhere fails too: the signed body is
	// never sent to another host.
	redirect := httptest.NewServer(http.RedirectHandler(rc.URL+"/elsewhere", http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	_, key := secret(1)
	failing := Endpoint{Owner: "owner-a", URL: rc.URL + "/hook", Secret: key}
	redirecting := Endpoint{Owner: "owner-a", URL: redirect.URL + "/hook", Secret: key}
	opts := fastOptions(b, failing, redirecting)
	opts.Retry.MaxAttempts = 3
	r, _ := start(t, opts)
	waitConsumer(t, b, failing)
	waitConsumer(t, b, redirecting)

	e := b.publish(t, fleetbus.SessionEnded, "s1", "owner-a")
	eventually(t, "two dead letters", func() bool { return testutil.ToFloat64(r.metrics.deadLetters) == 2 })
	eventually(t, "the consumers to settle", func() bool { return settled(t, b, failing) && settled(t, b, redirecting) })
	time.Sleep(300 * time.Millisecond)
	got, tries, _ := rc.snapshot()
	if tries[e.GetId()] != 3 || len(got) != 3 {
		t.Errorf("attempts %v (%d requests): want 3, then given up", tries, len(got))
	}
	for _, req := range got {
		if req.header.Get(HeaderID) != e.GetId() {
			t.Errorf("request with webhook-id %q, want only %q (the redirect must not be followed)", req.header.Get(HeaderID), e.GetId())
		}
	}
	if d, dl := testutil.ToFloat64(r.metrics.deliveries), testutil.ToFloat64(r.metrics.deadLetters); d != 0 || dl != 2 {
		t.Errorf("deliveries %v, dead letters %v: want 0, 2", d, dl)
	}
}

func TestRestartLosesNothing(t *testing.T) {
	b := newBus(t)
	down := make(chan struct{}) // closed: the receiver answers 2xx
	rc := newReceiver(t, func(string, int) int {
		select {
		case <-down:
			return http.StatusOK
		default:
			return http.StatusBadGateway
		}
	})
	_, key := secret(1)
	ep := Endpoint{Owner: "owner-a", URL: rc.URL, Secret: key}
	opts := fastOptions(b, ep)
	opts.Retry.MaxAttempts = 1000 // only the restart is under test
	_, stop := start(t, opts)
	waitConsumer(t, b, ep)

	var ids []string
	for i := range 20 {
		ids = append(ids, b.publish(t, fleetbus.SessionReady, fmt.Sprintf("s%d", i), "owner-a").GetId())
	}
	eventually(t, "attempts under way", func() bool { got, _, _ := rc.snapshot(); return len(got) >= 20 })
	stop()
	// Events published while no replica delivers wait in the stream.
	for i := range 10 {
		ids = append(ids, b.publish(t, fleetbus.SessionEnded, fmt.Sprintf("s%d", i), "owner-a").GetId())
	}
	close(down)
	r2, _ := start(t, opts)
	eventually(t, "every event delivered after the restart", func() bool {
		_, _, ok := rc.snapshot()
		for _, id := range ids {
			if ok[id] == 0 {
				return false
			}
		}
		return true
	})
	eventually(t, "the consumer to settle", func() bool { return settled(t, b, ep) })
	_, tries, ok := rc.snapshot()
	dups := 0
	for _, id := range ids {
		dups += ok[id] - 1
	}
	t.Logf("30 events, %d attempts in all, %d duplicate 2xx deliveries", sum(tries), dups)
	if d := testutil.ToFloat64(r2.metrics.deliveries); d < 30 {
		t.Errorf("restarted runner delivered %v, want all 30", d)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestOwnerIsolation(t *testing.T) {
	b := newBus(t)
	ra, rb, radmin := newReceiver(t, always(200)), newReceiver(t, always(200)), newReceiver(t, always(200))
	_, key := secret(1)
	a := Endpoint{Owner: "owner-a", URL: ra.URL, Secret: key}
	bb := Endpoint{Owner: "owner-b", URL: rb.URL, Secret: key}
	admin := Endpoint{Owner: "owner-admin", AllEvents: true, URL: radmin.URL, Secret: key}
	start(t, fastOptions(b, a, bb, admin))
	for _, ep := range []Endpoint{a, bb, admin} {
		waitConsumer(t, b, ep)
	}
	var ofA, ofB, all []string
	for i := range 5 {
		ea := b.publish(t, fleetbus.SessionReady, fmt.Sprintf("a%d", i), "owner-a")
		eb := b.publish(t, fleetbus.SessionReady, fmt.Sprintf("b%d", i), "owner-b")
		ofA, ofB, all = append(ofA, ea.GetId()), append(ofB, eb.GetId()), append(all, ea.GetId(), eb.GetId())
	}
	w := fleetbus.WorkerEvent(fleetbus.WorkerDraining, "w1", &fleetv1.Worker{Id: "w1"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.pub.Publish(ctx, w); err != nil {
		t.Fatal(err)
	}
	all = append(all, w.GetId())
	eventually(t, "every consumer to settle", func() bool {
		return settled(t, b, a) && settled(t, b, bb) && settled(t, b, admin)
	})
	for _, c := range []struct {
		name string
		rc   *receiver
		want []string
	}{{"owner a", ra, ofA}, {"owner b", rb, ofB}, {"admin", radmin, all}} {
		_, _, ok := c.rc.snapshot()
		var got []string
		for id := range ok {
			got = append(got, id)
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(c.want))
		if !slices.Equal(got, want) {
			t.Errorf("%s's endpoint got %v, want %v", c.name, got, want)
		}
	}
}

// hosts is a session record store for the origin check.
type hosts map[string]*fleetv1.Session

func (h hosts) Session(_ context.Context, id string) (*fleetv1.Session, int64, error) {
	if s, ok := h[id]; ok {
		return s, 1, nil
	}
	return nil, 0, errors.New("no such session")
}

func TestWorkerEventNeedsItsHost(t *testing.T) {
	b := newBus(t)
	rc := newReceiver(t, always(200))
	_, key := secret(1)
	ep := Endpoint{Owner: "owner-a", URL: rc.URL, Secret: key}
	records := hosts{
		"on-w1": {Id: "on-w1", WorkerId: "w1", Owner: "owner-a"},
		"on-w2": {Id: "on-w2", WorkerId: "w2", Owner: "owner-a"},
	}
	opts := fastOptions(b, ep)
	opts.CheckOrigin = func(ctx context.Context, subject string, e *fleetv1.Event) error {
		return httpapi.CheckEventOrigin(ctx, records, subject, e)
	}
	opts.Untrusted = httpapi.ErrUntrustedEvent
	start(t, opts)
	waitConsumer(t, b, ep)
	w1, err := fleetbus.NewPublisher(b.nc, fleetbus.AsWorker("w1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// w1 speaks for its own session, then claims w2's.
	own := fleetbus.SpeakingEvent(true, &fleetv1.Session{Id: "on-w1", WorkerId: "w1", Owner: "owner-a"}, time.Second)
	forged := fleetbus.SpeakingEvent(true, &fleetv1.Session{Id: "on-w2", WorkerId: "w1", Owner: "owner-a"}, time.Second)
	for _, e := range []*fleetv1.Event{own, forged} {
		if err := w1.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the consumer to settle", func() bool { return settled(t, b, ep) })
	if _, _, ok := rc.snapshot(); ok[own.GetId()] != 1 || ok[forged.GetId()] != 0 {
		t.Errorf("deliveries %v: want the host's own event once and not the forged one", ok)
	}
}

func TestPruneStaleConsumers(t *testing.T) {
	b := newBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := b.js.Stream(ctx, fleetbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	stale := ConsumerName("owner-a", "https://removed.example/")
	for _, name := range []string{stale, "audit"} {
		if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	rc := newReceiver(t, always(200))
	_, key := secret(1)
	ep := Endpoint{Owner: "owner-a", URL: rc.URL, Secret: key}
	start(t, fastOptions(b, ep))
	waitConsumer(t, b, ep)
	eventually(t, "the stale webhook consumer removed", func() bool {
		_, err := st.Consumer(ctx, stale)
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	})
	if _, err := st.Consumer(ctx, "audit"); err != nil {
		t.Errorf("a consumer that is not a webhook's was touched: %v", err)
	}
}

func TestReplicasShareAnEndpoint(t *testing.T) {
	b := newBus(t)
	rc := newReceiver(t, always(http.StatusAccepted))
	_, key := secret(1)
	ep := Endpoint{Owner: "owner-a", URL: rc.URL, Secret: key}
	r1, _ := start(t, fastOptions(b, ep))
	r2, _ := start(t, fastOptions(b, ep))
	waitConsumer(t, b, ep)
	var ids []string
	for i := range 40 {
		ids = append(ids, b.publish(t, fleetbus.SessionReady, fmt.Sprintf("s%d", i), "owner-a").GetId())
	}
	// Every event arrives (the consumer's counts can read as settled just
	// before the last pulls are accounted), then nothing more is pending.
	eventually(t, "every event delivered", func() bool {
		_, _, ok := rc.snapshot()
		for _, id := range ids {
			if ok[id] == 0 {
				return false
			}
		}
		return true
	})
	eventually(t, "the consumer to settle", func() bool { return settled(t, b, ep) })
	_, _, ok := rc.snapshot()
	for _, id := range ids {
		if ok[id] != 1 {
			t.Errorf("event %s delivered %d times, want once", id, ok[id])
		}
	}
	d1, d2 := testutil.ToFloat64(r1.metrics.deliveries), testutil.ToFloat64(r2.metrics.deliveries)
	t.Logf("replica 1 delivered %v, replica 2 %v", d1, d2)
	if d1+d2 != 40 {
		t.Errorf("replicas delivered %v + %v, want 40 in all", d1, d2)
	}
}

// TestNATSRestart: NATS going away and coming back (same address and
// store) delays deliveries but loses none.
func TestNATSRestart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	store := t.TempDir()
	srv, err := embedded.StartNATS(embedded.NATSOptions{Addr: addr, StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	b := connectBus(t, srv.URL())
	rc := newReceiver(t, always(http.StatusOK))
	_, key := secret(1)
	ep := Endpoint{Owner: "owner-a", URL: rc.URL, Secret: key}
	start(t, fastOptions(b, ep))
	waitConsumer(t, b, ep)
	var ids []string
	for i := range 5 {
		ids = append(ids, b.publish(t, fleetbus.SessionReady, fmt.Sprintf("s%d", i), "owner-a").GetId())
	}
	srv.Close()
	down := time.Now()
	time.Sleep(2 * time.Second)
	if srv, err = embedded.StartNATS(embedded.NATSOptions{Addr: addr, StoreDir: store}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	eventually(t, "the client to reconnect", b.nc.IsConnected)
	for i := range 5 {
		ids = append(ids, b.publish(t, fleetbus.SessionEnded, fmt.Sprintf("s%d", i), "owner-a").GetId())
	}
	eventually(t, "every event delivered", func() bool {
		_, _, ok := rc.snapshot()
		for _, id := range ids {
			if ok[id] == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("all 10 events delivered %s after NATS went down for 2s", time.Since(down).Round(10*time.Millisecond))
}
