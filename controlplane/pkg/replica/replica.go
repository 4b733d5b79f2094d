// Package replica assembles one control-plane replica: it connects to etcd
// and NATS, builds the registry cache, the session manager, the supervisor
// and the HTTP API, and runs them until its context ends. Replicas are
// interchangeable: start as many as you like against the same etcd and NATS.
package replica

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/eventlog"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/httpapi"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/placement"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/webhooks"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/workerclient"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Options configures a replica.
type Options struct {
	// ReplicaID names the replica in logs and the leader election.
	ReplicaID string
	// Listen is the HTTP listen address (":8080"; "127.0.0.1:0" in tests).
	Listen string
	// EtcdEndpoints and NATSURL are where etcd and NATS are, for servers
	// without TLS or credentials; Etcd and NATS, when their endpoints or
	// URL are set, replace them with full connection settings.
	EtcdEndpoints []string
	NATSURL       string
	Etcd          fleetconn.EtcdConfig
	NATS          fleetconn.NATSConfig
	// FleetTLS is the control plane's fleet certificate and CA: every
	// worker call is mutual TLS and checks the worker's identity. Nil dials
	// workers in plaintext (only for a fleet that runs without fleet TLS).
	FleetTLS *fleetpki.Material
	// Prefix is the etcd key prefix of the fleet.
	Prefix    string
	Keys      *auth.Keys
	PublicURL string
	// Policy is the placement policy: "spread" (default) or "pack".
	Policy string
	// TokenKeys sign and verify session tokens (WHEP/WHIP); every replica
	// of a fleet must be given the same keys.
	TokenKeys      *viewertoken.KeySet
	ViewerTokenTTL time.Duration
	// TLSCertFile and TLSKeyFile, when both set, serve the HTTP API over
	// TLS (PEM files, read once at start).
	TLSCertFile, TLSKeyFile string
	// BodyTimeout and BodyMinRate bound how long a request body may take
	// (httpapi.Options); zero means the API's defaults.
	BodyTimeout    time.Duration
	BodyMinRate    int64
	EventRetention time.Duration
	Supervisor     supervisor.Options
	// Webhooks sets the retry policy, timeout and concurrency of webhook
	// deliveries; the replica sets the endpoints (from Keys), the stream,
	// the encoder, the origin check, the metrics and the log.
	Webhooks webhooks.Options
	// TestHookMarkDelay is sessions.Options.TestHookMarkDelay (tests only).
	TestHookMarkDelay time.Duration
	Log               *slog.Logger
}

// Replica is one running control-plane replica.
type Replica struct {
	opts     Options
	log      *slog.Logger
	etcd     *clientv3.Client
	nc       *nats.Conn
	listener net.Listener
	server   *http.Server
	tls      bool
	store    *fleetstore.Store
	registry *registry.Registry
	super    *supervisor.Supervisor
	pool     *workerclient.Pool
	manager  *sessions.Manager
	events   *fleetbus.Publisher
	hooks    *webhooks.Runner
	// streamsDone ends event streams when the HTTP server shuts down.
	streamsDone chan struct{}
}

// New connects a replica and binds its listener; Run serves.
func New(ctx context.Context, opts Options) (*Replica, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Keys == nil || opts.Keys.Len() == 0 {
		return nil, errors.New("replica: no API keys")
	}
	if opts.TokenKeys == nil {
		return nil, errors.New("replica: no token keys")
	}
	var tlsConfig *tls.Config
	if opts.TLSCertFile != "" || opts.TLSKeyFile != "" {
		if opts.TLSCertFile == "" || opts.TLSKeyFile == "" {
			return nil, errors.New("replica: TLS needs both a certificate and a key file")
		}
		cert, err := tls.LoadX509KeyPair(opts.TLSCertFile, opts.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("replica: load TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if opts.ViewerTokenTTL == 0 {
		opts.ViewerTokenTTL = time.Hour
	}
	if opts.EventRetention == 0 {
		opts.EventRetention = 24 * time.Hour
	}
	selector, ok := placement.ByName(opts.Policy)
	if !ok {
		return nil, fmt.Errorf("replica: unknown placement policy %q (want spread or pack)", opts.Policy)
	}
	log := opts.Log.With("replica", opts.ReplicaID)
	r := &Replica{opts: opts, log: log, streamsDone: make(chan struct{})}
	ok = false
	defer func() {
		if !ok {
			r.close()
		}
	}()

	etcdCfg, natsCfg := opts.Etcd, opts.NATS
	if len(etcdCfg.Endpoints) == 0 {
		etcdCfg.Endpoints = opts.EtcdEndpoints
	}
	if natsCfg.URL == "" {
		natsCfg.URL = opts.NATSURL
	}
	if natsCfg.Name == "" {
		natsCfg.Name = "avatarfleet-controlplane-" + opts.ReplicaID
	}
	var err error
	// The client outlives New's ctx (clientv3 ends with its context).
	if r.etcd, err = fleetconn.Etcd(context.WithoutCancel(ctx), etcdCfg); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	// Reconnect soon after an outage: derived events wait for NATS.
	if r.nc, err = fleetconn.NATS(natsCfg, nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond)); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	// Lifecycle events are derived from etcd by the leader's event log
	// (package eventlog); nothing else in the control plane publishes them.
	pub, err := fleetbus.NewPublisher(r.nc)
	if err != nil {
		return nil, err
	}
	r.events = pub
	stream, err := fleetbus.EnsureStream(ctx, pub.JetStream(), opts.EventRetention)
	if err != nil {
		return nil, err
	}
	if kept := stream.CachedInfo().Config.MaxBytes; kept < fleetbus.DefaultStreamMaxBytes {
		log.Warn("the events stream is smaller than asked: NATS cannot reserve more of its store (by default 75% of the free disk); fewer old events are kept for replay",
			"stream", fleetbus.StreamName, "kept_mib", kept>>20, "asked_mib", fleetbus.DefaultStreamMaxBytes>>20)
	}

	store := fleetstore.New(r.etcd, fleetstore.NewKeys(opts.Prefix))
	r.store = store
	tokens, err := viewertoken.NewSigner(opts.TokenKeys, opts.ViewerTokenTTL)
	if err != nil {
		return nil, err
	}
	// Earlier versions kept the signing key in plain text in etcd: remove it.
	if deleted, err := store.DeleteConfig(ctx, "viewer-token-key"); err != nil {
		log.Warn("remove the legacy viewer-token key from etcd", "err", err)
	} else if deleted {
		log.Info("removed the legacy viewer-token key from etcd")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.registry = registry.New(store, log)
	if opts.FleetTLS != nil {
		r.pool = workerclient.NewTLSPool(opts.FleetTLS)
	} else {
		r.pool = workerclient.NewPool()
	}
	// Connections to workers that are gone are closed, not kept forever.
	r.registry.OnWorkerGone(r.pool.ForgetWorker)
	reg.MustRegister(newFleetCollector(r.registry, store, log))
	r.manager = sessions.NewManager(sessions.Options{
		Store:    store,
		Registry: r.registry,
		Workers:  r.pool,
		Selector: selector,
		Log:      log,
		Metrics:  sessions.NewMetrics(reg),

		TestHookMarkDelay: opts.TestHookMarkDelay,
	})
	supOpts := opts.Supervisor
	supOpts.ReplicaID, supOpts.Store, supOpts.Registry, supOpts.Log = opts.ReplicaID, store, r.registry, log
	supOpts.Workers = r.pool
	if supOpts.Health == nil {
		supOpts.Health = supervisor.NATSHealth{Conn: r.nc}
	}
	if supOpts.Replacer == nil {
		supOpts.Replacer = r.manager // the leader re-places sessions of lost workers
	}
	if supOpts.Migration.Replay == nil {
		// A migrated session speaks on its target what its source had not.
		supOpts.Migration.Replay = r.manager.ReplaySpeech
	}
	// The leader derives lifecycle events from etcd (package eventlog);
	// nothing that changes records publishes them.
	evlog := eventlog.New(eventlog.Options{Store: store, Bus: pub, Log: log, Metrics: eventlog.NewMetrics(reg)})
	supOpts.LeaderDuties = append(slices.Clip(supOpts.LeaderDuties), evlog.Run)
	r.super = supervisor.New(supOpts)

	// Every replica pulls from the same durable consumer per endpoint:
	// deliveries are shared, and a replica's restart loses none.
	hookOpts := opts.Webhooks
	hookOpts.JetStream, hookOpts.Endpoints, hookOpts.Metrics, hookOpts.Log = pub.JetStream(), webhooks.FromKeys(opts.Keys), webhooks.NewMetrics(reg), log
	hookOpts.Encode = func(e *fleetv1.Event) ([]byte, error) { return httpapi.EventJSON(e, opts.PublicURL) }
	hookOpts.CheckOrigin = func(ctx context.Context, subject string, e *fleetv1.Event) error {
		return httpapi.CheckEventOrigin(ctx, store, subject, e)
	}
	hookOpts.Untrusted = httpapi.ErrUntrustedEvent
	if r.hooks, err = webhooks.New(hookOpts); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}

	api := httpapi.New(httpapi.Options{
		Sessions:      r.manager,
		Registry:      r.registry,
		Store:         store,
		WorkerClients: r.pool,
		Keys:          opts.Keys,
		Tokens:        tokens,
		Events:        pub.JetStream(),
		Ready:         r.ready,
		Gatherer:      reg,
		Registerer:    reg,
		PublicURL:     opts.PublicURL,
		Log:           log,
		BodyTimeout:   opts.BodyTimeout,
		BodyMinRate:   opts.BodyMinRate,
		StreamsDone:   r.streamsDone,
	})
	r.listener, err = net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", opts.Listen, err)
	}
	// No ReadTimeout or WriteTimeout: they would cut event streams. Request
	// bodies are bounded per request by the API (408 request_timeout).
	r.server = &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, TLSConfig: tlsConfig}
	r.tls = tlsConfig != nil
	r.server.RegisterOnShutdown(func() { close(r.streamsDone) })
	ok = true
	return r, nil
}

// Addr is the bound HTTP address.
func (r *Replica) Addr() string { return r.listener.Addr().String() }

// URL is the base URL of the bound HTTP address (https with TLS).
func (r *Replica) URL() string {
	if r.tls {
		return "https://" + r.Addr()
	}
	return "http://" + r.Addr()
}

// Sessions is the replica's session manager (benchmarks drive it directly).
func (r *Replica) Sessions() *sessions.Manager { return r.manager }

// Registry is the replica's fleet cache.
func (r *Replica) Registry() *registry.Registry { return r.registry }

func (r *Replica) ready(ctx context.Context) error {
	select {
	case <-r.registry.Synced():
	default:
		return errors.New("fleet cache not synced")
	}
	if !r.nc.IsConnected() {
		return errors.New("nats disconnected")
	}
	return r.store.Ping(ctx)
}

// Run serves until ctx ends, then shuts down: the HTTP server drains its
// requests, the supervisor resigns, and connections close.
func (r *Replica) Run(ctx context.Context) error {
	defer r.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.registry.Run(gctx) })
	g.Go(func() error { return r.manager.Run(gctx) })
	g.Go(func() error { return r.super.Run(gctx) })
	g.Go(func() error { return r.hooks.Run(gctx) })
	g.Go(func() error {
		serve := r.server.Serve
		if r.tls {
			serve = func(l net.Listener) error { return r.server.ServeTLS(l, "", "") }
		}
		if err := serve(r.listener); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return r.server.Shutdown(sctx)
	})
	r.log.Info("control plane replica serving", "addr", r.Addr(), "tls", r.tls, "token_keys", r.opts.TokenKeys.IDs())
	return g.Wait()
}

func (r *Replica) close() {
	if r.listener != nil && r.server == nil {
		_ = r.listener.Close()
	}
	if r.pool != nil {
		r.pool.Close()
	}
	if r.events != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := r.events.Flush(ctx); err != nil {
			r.log.Warn("events still unacknowledged at shutdown", "err", err)
		}
		cancel()
	}
	if r.nc != nil {
		r.nc.Close()
	}
	if r.etcd != nil {
		_ = r.etcd.Close()
	}
}
