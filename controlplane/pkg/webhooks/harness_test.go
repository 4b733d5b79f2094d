package webhooks

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/httpapi"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// bus is a real embedded NATS with the events stream.
type bus struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *fleetbus.Publisher
}

func newBus(t *testing.T) *bus {
	t.Helper()
	srv, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return connectBus(t, srv.URL())
}

// connectBus connects to NATS at url, reconnecting for ever, and ensures
// the events stream.
func connectBus(t *testing.T, url string) *bus {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub, err := fleetbus.NewPublisher(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := fleetbus.EnsureStream(ctx, pub.JetStream(), time.Hour); err != nil {
		t.Fatal(err)
	}
	return &bus{nc: nc, js: pub.JetStream(), pub: pub}
}

// publish publishes a session event of owner and returns it (with its id).
func (b *bus) publish(t *testing.T, typ, session, owner string) *fleetv1.Event {
	t.Helper()
	e := fleetbus.SessionEvent(typ, &fleetv1.Session{Id: session, Owner: owner, State: fleetv1.SessionState_SESSION_STATE_READY})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.pub.Publish(ctx, e); err != nil {
		t.Fatal(err)
	}
	return e
}

// request is what a receiver got.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a real HTTP server; status picks the answer to the n-th
// request (from 1) with a given webhook-id.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []request
	tries  map[string]int
	ok     map[string]int // 2xx answers per webhook-id
	status func(id string, n int) int
}

func newReceiver(t *testing.T, status func(id string, n int) int) *receiver {
	t.Helper()
	rc := &receiver{tries: map[string]int{}, ok: map[string]int{}, status: status}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.Header.Get(HeaderID)
		rc.mu.Lock()
		rc.got = append(rc.got, request{header: r.Header.Clone(), body: body})
		rc.tries[id]++
		code := rc.status(id, rc.tries[id])
		if code >= 200 && code < 300 {
			rc.ok[id]++
		}
		rc.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) snapshot() (got []request, tries, ok map[string]int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	tries, ok = map[string]int{}, map[string]int{}
	for k, v := range rc.tries {
		tries[k] = v
	}
	for k, v := range rc.ok {
		ok[k] = v
	}
	return append([]request(nil), rc.got...), tries, ok
}

func always(code int) func(string, int) int { return func(string, int) int { return code } }

// secret makes a webhook secret and its key.
func secret(b byte) (string, []byte) {
	key := bytes.Repeat([]byte{b}, 32)
	return "whsec_" + base64.StdEncoding.EncodeToString(key), key
}

// fastOptions are options with quick retries for tests.
func fastOptions(b *bus, eps ...Endpoint) Options {
	return Options{
		JetStream: b.js,
		Endpoints: eps,
		Encode:    func(e *fleetv1.Event) ([]byte, error) { return httpapi.EventJSON(e, "") },
		Retry:     Retry{MaxAttempts: 5, Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Timeout:   5 * time.Second,
		AckWait:   10 * time.Second,
		Metrics:   NewMetrics(prometheus.NewRegistry()),
		Log:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// start runs a Runner until the returned stop is called (or the test ends).
func start(t *testing.T, opts Options) (r *Runner, stop func()) {
	t.Helper()
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.pollWait = 500 * time.Millisecond // quicker stops
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("runner did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled reports whether an endpoint's consumer has nothing left to
// deliver or retry.
func settled(t *testing.T, b *bus, ep Endpoint) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := b.js.Consumer(ctx, fleetbus.StreamName, ConsumerName(ep.Owner, ep.URL))
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
}
