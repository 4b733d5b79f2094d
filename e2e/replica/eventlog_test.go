package replica_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/webhooks"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// sseClient reads GET /v1/events of one replica, from a Last-Event-ID.
type sseClient struct {
	mu     sync.Mutex
	events []apiv1.Event
	lastID string // the SSE id (stream sequence) of the last event
	gaps   []string
	cancel context.CancelFunc
	done   chan struct{}
}

func openSSE(t *testing.T, url, lastID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &sseClient{lastID: lastID, cancel: cancel, done: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, "GET", url+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testfleet.AdminKey)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	go func() {
		defer close(c.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var id, typ, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "" && data != "":
				c.mu.Lock()
				if typ == "gap" {
					c.gaps = append(c.gaps, data)
				} else {
					var e apiv1.Event
					if err := json.Unmarshal([]byte(data), &e); err != nil {
						t.Errorf("event %s: %v", data, err)
					}
					c.events = append(c.events, e)
					c.lastID = id
				}
				c.mu.Unlock()
				id, typ, data = "", "", ""
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "event: "):
				typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = line[6:]
			}
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *sseClient) close() { c.cancel(); <-c.done }

// derived are the client's lifecycle events derived from etcd.
func (c *sseClient) derived() []apiv1.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []apiv1.Event
	for _, e := range c.events {
		if e.Revision > 0 {
			out = append(out, e)
		}
	}
	return out
}

// churn creates and deletes sessions on one replica until stop closes;
// it returns what the API answered: sessions created and those deleted.
type churned struct {
	mu      sync.Mutex
	created []string
	deleted map[string]bool
	failed  int
}

func churn(t *testing.T, f *testfleet.Fleet, replica int, stop <-chan struct{}, c *churned) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		r, err := f.Do(replica, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
		if err != nil || r.Status != 201 {
			c.mu.Lock()
			c.failed++
			c.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var s apiv1.Session
		r.JSON(t, &s)
		c.mu.Lock()
		c.created = append(c.created, s.ID)
		c.mu.Unlock()
		if d, err := f.Do(replica, "DELETE", "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil); err == nil && d.Status == 204 {
			c.mu.Lock()
			c.deleted[s.ID] = true
			c.mu.Unlock()
		}
	}
}

// expected are the lifecycle events etcd's records imply for the churned
// sessions: created → starting, ready; deleted → ended.
func expected(t *testing.T, f *testfleet.Fleet, c *churned) map[string][]string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[string][]string{}
	for _, id := range c.created {
		rec, _, err := f.Store.Session(context.Background(), id)
		if err != nil {
			t.Fatalf("record of %s: %v", id, err)
		}
		types := []string{fleetbus.SessionStarting, fleetbus.SessionReady}
		switch rec.GetState() {
		case fleetv1.SessionState_SESSION_STATE_READY:
		case fleetv1.SessionState_SESSION_STATE_ENDED:
			types = append(types, fleetbus.SessionEnded)
		default:
			t.Fatalf("session %s is %s", id, rec.GetState())
		}
		if c.deleted[id] && rec.GetState() != fleetv1.SessionState_SESSION_STATE_ENDED {
			t.Fatalf("session %s: deleted, but its record is %s", id, rec.GetState())
		}
		want[id] = types
	}
	return want
}

// checkEvents checks events (derived ones, in the order received) against
// want: every event once by id, each session's in order, nothing more for
// those sessions. It reports what is missing (nil when complete).
func checkEvents(t *testing.T, what string, events []apiv1.Event, want map[string][]string, final bool) bool {
	seen := map[string]bool{}
	got := map[string][]string{}
	for _, e := range events {
		if seen[e.ID] {
			t.Errorf("%s: event %s (%s %s) twice", what, e.ID, e.Type, e.SessionID)
		}
		seen[e.ID] = true
		if _, ok := want[e.SessionID]; ok {
			got[e.SessionID] = append(got[e.SessionID], e.Type)
		}
	}
	complete := true
	for id, types := range want {
		if fmt.Sprint(got[id]) != fmt.Sprint(types) {
			complete = false
			if final {
				t.Errorf("%s: session %s has events %v, want %v", what, id, got[id], types)
			}
		}
	}
	return complete
}

// TestEventsSurviveNATSOutageAndLeaderChange: sessions are created and
// deleted while NATS is down for 10 s, then while the leader's replica
// stops. Afterwards an SSE client that resumes from its Last-Event-ID, a
// plain read of the stream, and a webhook receiver (a real HTTP server that
// verifies each signature) have every lifecycle event exactly once by id,
// in order per session, as etcd's records imply.
func TestEventsSurviveNATSOutageAndLeaderChange(t *testing.T) {
	hooks := newHookReceiver(t)
	f := testfleet.Start(t, testfleet.Options{
		Replicas: 2,
		Workers:  []testfleet.WorkerSpec{{ID: "w1", SlotsPerGPU: 4}, {ID: "w2", SlotsPerGPU: 4}},
		// NATS goes away on purpose: health checks must not mark the
		// workers down meanwhile (this test is about events).
		Supervisor:     supervisor.Options{HealthFailures: 1 << 30},
		Webhooks:       []testfleet.Webhook{{Key: testfleet.SessionsKey, URL: hooks.srv.URL + "/hook", Secret: hooks.secret}},
		WebhookOptions: webhooks.Options{Retry: webhooks.Retry{MaxAttempts: 20, Initial: 50 * time.Millisecond, Max: time.Second}},
	})
	ctx := context.Background()
	waitWebhookConsumer(t, f, testfleet.SessionsKey, hooks.srv.URL+"/hook")
	leader := func() string {
		resp, err := f.Client.Get(ctx, f.Store.Keys().Leader(), clientv3.WithFirstCreate()...)
		if err != nil || len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	f.Eventually(20*time.Second, "a leader", func() bool { return leader() != "" })
	lead := 0
	if leader() == "cp1" {
		lead = 1
	}
	api := 1 - lead
	t.Logf("leader cp%d; the API and SSE go through cp%d", lead, api)

	first := openSSE(t, f.URL(api), "")
	time.Sleep(300 * time.Millisecond) // let the stream subscribe
	c := &churned{deleted: map[string]bool{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { churn(t, f, api, stop, c) })
	}
	time.Sleep(2 * time.Second)
	f.NATS.Stop()
	outage := time.Now()
	time.Sleep(10 * time.Second)
	if err := f.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("NATS was down %s", back.Sub(outage).Round(time.Millisecond))
	// The first client gives up (its connection may have stalled in the
	// outage) and a second resumes where it stopped.
	time.Sleep(time.Second)
	first.close()
	first.mu.Lock()
	lastID := first.lastID
	first.mu.Unlock()
	second := openSSE(t, f.URL(api), lastID)
	// What was created up to the outage's end reaches the resumed client.
	c.mu.Lock()
	backlog := map[string][]string{}
	for _, id := range c.created {
		backlog[id] = []string{fleetbus.SessionStarting, fleetbus.SessionReady}
	}
	c.mu.Unlock()
	caughtUp := func() bool {
		got := map[string][]string{}
		for _, e := range append(first.derived(), second.derived()...) {
			if _, ok := backlog[e.SessionID]; ok && e.Type != fleetbus.SessionEnded {
				got[e.SessionID] = append(got[e.SessionID], e.Type)
			}
		}
		for id, want := range backlog {
			if fmt.Sprint(got[id]) != fmt.Sprint(want) {
				return false
			}
		}
		return true
	}
	f.Eventually(60*time.Second, "the outage's events reach the resumed client", caughtUp)
	t.Logf("the resumed client had the events of the %d sessions created up to the outage's end %s after NATS returned",
		len(backlog), time.Since(back).Round(100*time.Millisecond))
	time.Sleep(time.Second)
	f.StopReplica(lead)
	t.Logf("stopped the leader cp%d", lead)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	want := expected(t, f, c)
	t.Logf("%d sessions created, %d deleted, %d creates refused", len(c.created), len(c.deleted), c.failed)
	if len(c.created) < 10 {
		t.Fatalf("only %d sessions created", len(c.created))
	}

	sse := func() []apiv1.Event { return append(first.derived(), second.derived()...) }
	stopped := time.Now()
	deadline := stopped.Add(60 * time.Second)
	for !checkEvents(t, "SSE", sse(), want, false) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("SSE had every event %s after the churn stopped", time.Since(stopped).Round(100*time.Millisecond))
	checkEvents(t, "SSE", sse(), want, true)
	if len(second.gaps) > 0 {
		t.Errorf("gap events %v from a stream that lost nothing", second.gaps)
	}

	// A plain read of the stream agrees.
	js := f.ControlPlaneJetStream(t)
	cons, err := js.OrderedConsumer(ctx, fleetbus.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var stored []apiv1.Event
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			e, err := fleetbus.DecodeEvent(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			if e.GetRevision() > 0 {
				stored = append(stored, apiv1.Event{ID: e.GetId(), Type: e.GetType(), SessionID: e.GetSessionId(), Revision: e.GetRevision()})
			}
		}
		if n == 0 {
			break
		}
	}
	checkEvents(t, "stream", stored, want, true)
	t.Logf("%d derived events in the stream, %d through SSE", len(stored), len(sse()))

	// The webhook receiver, a real HTTP server, verified every request's
	// signature and has each event once by id (it drops redeliveries of an
	// id it has acknowledged, as a receiver of at-least-once delivery does).
	deadline = time.Now().Add(90 * time.Second)
	for !checkEvents(t, "webhook", hooks.derived(), want, false) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	checkEvents(t, "webhook", hooks.derived(), want, true)
	hooks.mu.Lock()
	t.Logf("webhook: %d events delivered, %d redeliveries of an acknowledged id, %d bad signatures",
		len(hooks.byID), hooks.redelivered, hooks.badSignatures)
	if hooks.badSignatures > 0 {
		t.Errorf("%d webhook requests failed verification", hooks.badSignatures)
	}
	hooks.mu.Unlock()
}

// hookReceiver is a webhook endpoint that verifies each request and keeps
// the first delivery of each event id.
type hookReceiver struct {
	srv    *httptest.Server
	secret string

	mu            sync.Mutex
	byID          map[string]apiv1.Event
	redelivered   int
	badSignatures int
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{
		secret: "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		byID:   map[string]apiv1.Event{},
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		h.mu.Lock()
		defer h.mu.Unlock()
		if err := webhooks.Verify(h.secret, r.Header, body, 5*time.Minute); err != nil {
			h.badSignatures++
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var e apiv1.Event
		if err := json.Unmarshal(body, &e); err != nil || e.ID != r.Header.Get(webhooks.HeaderID) {
			h.badSignatures++
			http.Error(w, "body and webhook-id disagree", http.StatusBadRequest)
			return
		}
		if _, seen := h.byID[e.ID]; seen {
			h.redelivered++
		} else {
			h.byID[e.ID] = e
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// derived are the delivered lifecycle events derived from etcd, in
// revision order (deliveries run in parallel, so arrival order is not).
func (h *hookReceiver) derived() []apiv1.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]apiv1.Event, 0, len(h.byID))
	for _, e := range h.byID {
		if e.Revision > 0 {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Revision != out[j].Revision {
			return out[i].Revision < out[j].Revision
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// waitWebhookConsumer waits for a key's endpoint's durable consumer: an
// endpoint gets the events from its consumer's creation on.
func waitWebhookConsumer(t *testing.T, f *testfleet.Fleet, key, url string) {
	js := f.ControlPlaneJetStream(t)
	f.Eventually(30*time.Second, "the webhook consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.Consumer(ctx, fleetbus.StreamName, webhooks.ConsumerName(auth.Fingerprint(key), url))
		return err == nil
	})
}
