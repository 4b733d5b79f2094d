// Package webhooks POSTs lifecycle events to the URLs an API key lists in
// the keys file, signed as Standard Webhooks prescribe (webhook-id,
// webhook-timestamp, webhook-signature: HMAC-SHA256 over id, timestamp and
// body; see Sign and Verify).
//
// Each endpoint (key, URL) reads the events stream through its own durable
// JetStream pull consumer, named from a hash of owner and URL. Every
// control-plane replica pulls from the same consumers, so the work is
// shared and a replica's restart loses nothing: an event is acknowledged
// only after the receiver answered 2xx, a failed attempt is negatively
// acknowledged with an exponential, jittered delay, and after the last
// attempt the event is terminated and counted as a dead letter. Delivery
// is at least once and not ordered; receivers deduplicate by webhook-id.
package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// ConsumerPrefix starts the name of every webhook consumer on the events
// stream; consumers with it that no endpoint configures are removed.
const ConsumerPrefix = "webhook_"

// Defaults of Options.
const (
	DefaultMaxAttempts   = 10
	DefaultInitialDelay  = 5 * time.Second
	DefaultMaxDelay      = time.Hour
	DefaultTimeout       = 10 * time.Second
	DefaultConcurrency   = 4
	DefaultMaxAckPending = 1000
	// defaultPollWait bounds one pull, and so how long Run takes to stop.
	defaultPollWait = 2 * time.Second
)

// Endpoint is one URL events are delivered to.
type Endpoint struct {
	// Owner is the key's fingerprint: only its sessions' events are sent,
	// unless AllEvents (an admin key) is set.
	Owner     string
	AllEvents bool
	URL       string
	// Secret is the HMAC-SHA256 key (the decoded "whsec_" secret).
	Secret []byte
}

// FromKeys returns the endpoints of every key's webhooks.
func FromKeys(keys *auth.Keys) []Endpoint {
	var out []Endpoint
	for _, w := range keys.Webhooks() {
		out = append(out, Endpoint{Owner: w.Owner, AllEvents: w.AllEvents, URL: w.URL, Secret: w.Secret})
	}
	return out
}

// ConsumerName is the durable consumer of an endpoint: stable across
// restarts and secret rotation, and naming neither owner nor URL.
func ConsumerName(owner, rawURL string) string {
	d := sha256.Sum256([]byte(owner + "\n" + rawURL))
	return ConsumerPrefix + hex.EncodeToString(d[:12])
}

// wants reports whether the endpoint's key may see e (the rule of the
// event streams, httpapi.EventVisible).
func (ep Endpoint) wants(e *fleetv1.Event) bool {
	return ep.AllEvents || (e.GetSession() != nil && e.GetSession().GetOwner() == ep.Owner)
}

// Retry is the retry policy: attempt n (from 1) that fails is retried
// after about Initial·2^(n-1), capped at Max, jittered into its upper half;
// the event is given up after MaxAttempts attempts.
type Retry struct {
	MaxAttempts int
	Initial     time.Duration
	Max         time.Duration
}

// Options configures a Runner.
type Options struct {
	JetStream jetstream.JetStream
	Endpoints []Endpoint
	// Encode makes the body of an event (the JSON of the event streams).
	Encode func(*fleetv1.Event) ([]byte, error)
	// CheckOrigin, when set, vouches for an event received on subject
	// before it is sent; an error wrapping Untrusted drops the event, any
	// other is a failed attempt.
	CheckOrigin func(ctx context.Context, subject string, e *fleetv1.Event) error
	// Untrusted is the error CheckOrigin wraps for an event to drop.
	Untrusted error
	Retry     Retry
	// Timeout bounds one POST (0: DefaultTimeout).
	Timeout time.Duration
	// Concurrency is the most POSTs at once per endpoint on this replica
	// (0: DefaultConcurrency).
	Concurrency int
	// AckWait is how long JetStream waits for an outcome before it
	// redelivers an event to another puller (0: the timeout plus 30 s).
	AckWait time.Duration
	// MaxAckPending bounds the events of one endpoint in flight or
	// waiting for a retry (0: DefaultMaxAckPending).
	MaxAckPending int
	// Client sends the POSTs (nil: a client that follows no redirect).
	Client  *http.Client
	Metrics *Metrics
	Log     *slog.Logger
	// now is the clock of signatures (tests).
	now func() time.Time
}

// Runner delivers events to the endpoints.
type Runner struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	client  *http.Client
	// pollWait bounds one pull request.
	pollWait time.Duration
}

// New checks opts and returns a Runner; Run delivers.
func New(opts Options) (*Runner, error) {
	if opts.JetStream == nil {
		return nil, errors.New("webhooks: no JetStream")
	}
	if opts.Encode == nil {
		return nil, errors.New("webhooks: no event encoder")
	}
	if opts.Retry.MaxAttempts == 0 {
		opts.Retry.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Retry.Initial == 0 {
		opts.Retry.Initial = DefaultInitialDelay
	}
	if opts.Retry.Max == 0 {
		opts.Retry.Max = max(DefaultMaxDelay, opts.Retry.Initial)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.AckWait == 0 {
		opts.AckWait = opts.Timeout + 30*time.Second
	}
	if opts.MaxAckPending == 0 {
		opts.MaxAckPending = DefaultMaxAckPending
	}
	switch {
	case opts.Retry.MaxAttempts < 1:
		return nil, fmt.Errorf("webhooks: %d attempts, want at least 1", opts.Retry.MaxAttempts)
	case opts.Retry.Initial < 0 || opts.Retry.Max < opts.Retry.Initial:
		return nil, fmt.Errorf("webhooks: retry delays %s..%s, want 0 <= initial <= max", opts.Retry.Initial, opts.Retry.Max)
	case opts.Timeout < 0 || opts.Concurrency < 1 || opts.AckWait <= opts.Timeout || opts.MaxAckPending < opts.Concurrency:
		return nil, errors.New("webhooks: want a timeout >= 0, concurrency >= 1, ack wait above the timeout, max ack pending >= concurrency")
	}
	seen := map[string]bool{}
	for _, ep := range opts.Endpoints {
		if len(ep.Secret) == 0 || ep.Owner == "" || ep.URL == "" {
			return nil, fmt.Errorf("webhooks: endpoint of owner %q without owner, URL or secret", ep.Owner)
		}
		name := ConsumerName(ep.Owner, ep.URL)
		if seen[name] {
			return nil, fmt.Errorf("webhooks: owner %s lists %s twice", ep.Owner, redact(ep.URL))
		}
		seen[name] = true
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	r := &Runner{opts: opts, log: opts.Log.With("component", "webhooks"), metrics: opts.Metrics, client: opts.Client, pollWait: defaultPollWait}
	if r.metrics == nil {
		r.metrics = NewMetrics(nil)
	}
	if r.client == nil {
		r.client = newClient()
	}
	return r, nil
}

// newClient follows no redirect (a 3xx is a failed attempt), so a
// receiver cannot send the signed body to another host.
func newClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = DefaultConcurrency * 2
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// redact keeps an endpoint URL's scheme and host for logs: its path or
// query may carry a token.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host
}

// Run delivers until ctx ends, then returns once every attempt under way
// has been settled. It first removes the webhook consumers no endpoint
// configures any more.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.retry(ctx, "remove consumers of endpoints no longer configured", r.prune)
	}()
	for _, ep := range r.opts.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runEndpoint(ctx, newEndpointState(ep))
		}()
	}
	if len(r.opts.Endpoints) > 0 {
		r.log.Info("webhooks delivering", "endpoints", len(r.opts.Endpoints), "max_attempts", r.opts.Retry.MaxAttempts)
	}
	wg.Wait()
	return nil
}

// consumerConfig is the durable consumer of an endpoint. A new consumer
// starts at the next event: an endpoint gets the events from the moment it
// is configured.
func (r *Runner) consumerConfig(name string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "avatarfleet webhook endpoint",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.opts.AckWait,
		// Attempts are counted here (the delivery count), so an event
		// redelivered after a crash mid-attempt is still given up and
		// counted once its attempts are spent.
		MaxDeliver:    -1,
		MaxAckPending: r.opts.MaxAckPending,
		FilterSubject: fleetbus.EventsAll,
	}
}

func (r *Runner) ensure(ctx context.Context, name string) (jetstream.Consumer, error) {
	st, err := r.opts.JetStream.Stream(ctx, fleetbus.StreamName)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	c, err := st.CreateOrUpdateConsumer(ctx, r.consumerConfig(name))
	if err != nil {
		return nil, fmt.Errorf("webhook consumer %s: %w", name, err)
	}
	return c, nil
}

// prune deletes the webhook consumers of endpoints no longer configured.
func (r *Runner) prune(ctx context.Context) error {
	want := map[string]bool{}
	for _, ep := range r.opts.Endpoints {
		want[ConsumerName(ep.Owner, ep.URL)] = true
	}
	st, err := r.opts.JetStream.Stream(ctx, fleetbus.StreamName)
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	names := st.ConsumerNames(ctx)
	var stale []string
	for n := range names.Name() {
		if strings.HasPrefix(n, ConsumerPrefix) && !want[n] {
			stale = append(stale, n)
		}
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list consumers: %w", err)
	}
	for _, n := range stale {
		if err := st.DeleteConsumer(ctx, n); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s: %w", n, err)
		}
		r.log.Info("removed the consumer of a webhook endpoint no longer configured", "consumer", n)
	}
	return nil
}
