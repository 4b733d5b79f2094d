// Command controlplane runs one AvatarFleet control-plane replica: the REST
// API, placement and the fleet supervisor. With no --etcd and --nats it
// starts embedded etcd and NATS under --data-dir, the single-machine default.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/replica"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

type config struct {
	listen, etcd, nats, dataDir          string
	embeddedEtcdListen, embeddedNATSAddr string
	apiKeysFile, publicURL, policy       string
	prefix, replicaID, logLevel          string
	tlsCert, tlsKey, tokenKeysFile       string
	viewerTokenTTL, leaseTTL             time.Duration
	healthInterval, retention            time.Duration
	healthFailures                       int
	limits                               auth.Limits
}

func parseFlags(args []string) (config, error) {
	var c config
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", ":8080", "HTTP listen address (REST API, signaling, demo page, /metrics)")
	fs.StringVar(&c.etcd, "etcd", "", "comma-separated etcd endpoints; empty starts embedded etcd")
	fs.StringVar(&c.nats, "nats", "", "NATS URL; empty starts embedded NATS with JetStream")
	fs.StringVar(&c.dataDir, "data-dir", ".avatarfleet", "data directory (embedded etcd and NATS, generated API key)")
	fs.StringVar(&c.embeddedEtcdListen, "embedded-etcd-listen", "127.0.0.1:2379", "client address of embedded etcd")
	fs.StringVar(&c.embeddedNATSAddr, "embedded-nats-listen", "127.0.0.1:4222", "address of embedded NATS")
	fs.StringVar(&c.apiKeysFile, "api-keys-file", "", "YAML file of API keys and scopes")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) of the REST listener; with --tls-key serves HTTPS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tokenKeysFile, "token-keys-file", "", "YAML/JSON file of session-token signing keys (first signs, all verify); default <data-dir>/token-keys.yaml, made on first start")
	fs.StringVar(&c.publicURL, "public-url", "", "public base URL handed out in session URLs (default: from each request)")
	fs.StringVar(&c.policy, "placement-policy", "spread", "placement policy: spread or pack")
	fs.StringVar(&c.prefix, "etcd-prefix", fleetstore.DefaultPrefix, "etcd key prefix of the fleet")
	fs.StringVar(&c.replicaID, "replica-id", host+"-"+fmt.Sprint(os.Getpid()), "this replica's name in logs and elections")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.DurationVar(&c.viewerTokenTTL, "viewer-token-ttl", time.Hour, "lifetime of viewer tokens")
	fs.DurationVar(&c.leaseTTL, "leader-ttl", 5*time.Second, "lease of the supervisor leader")
	fs.DurationVar(&c.healthInterval, "health-interval", time.Second, "time between worker health checks")
	fs.IntVar(&c.healthFailures, "health-failures", 3, "failed health checks in a row before a worker is down")
	fs.DurationVar(&c.retention, "session-retention", 24*time.Hour, "how long ended sessions stay readable")
	c.limits = auth.DefaultLimits()
	fs.IntVar(&c.limits.MaxSessions, "default-max-sessions", auth.DefaultMaxSessions, "live sessions per API key across the fleet, unless its keys-file entry says otherwise (0: no limit)")
	fs.Float64Var(&c.limits.Rate, "default-rate", auth.DefaultRate, "requests per second per API key on each replica (0: no limit)")
	fs.IntVar(&c.limits.Burst, "default-burst", auth.DefaultBurst, "requests per API key at once above the rate")
	fs.IntVar(&c.limits.MaxEventStreams, "default-max-streams", auth.DefaultMaxEventStreams, "open event streams per API key on each replica (0: no limit)")
	fs.IntVar(&c.limits.MaxPendingViewers, "default-max-pending-viewers", auth.DefaultMaxPendingViewers, "WHEP viewers of one session still connecting (per viewer token: at most 5)")
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix("AVATARFLEET")); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case c.viewerTokenTTL < time.Minute:
		return c, errors.New("--viewer-token-ttl: at least 1m")
	case c.leaseTTL < time.Second:
		return c, errors.New("--leader-ttl: at least 1s")
	case c.healthInterval < 100*time.Millisecond:
		return c, errors.New("--health-interval: at least 100ms")
	case c.healthFailures < 1:
		return c, errors.New("--health-failures: at least 1")
	case c.retention < time.Minute:
		return c, errors.New("--session-retention: at least 1m")
	}
	if err := c.limits.Validate(); err != nil {
		return c, fmt.Errorf("default limits: %w", err)
	}
	c.limits.MaxPendingViewersPerToken = min(auth.DefaultMaxPendingViewersPerToken, c.limits.MaxPendingViewers)
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return c, errors.New("--tls-cert and --tls-key go together")
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return c, fmt.Errorf("--listen %q: %w", c.listen, err)
	}
	return c, nil
}

func main() {
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane: --log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("control plane failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config, log *slog.Logger) error {
	keys, generated, err := loadKeys(c)
	if err != nil {
		return err
	}
	if err := keys.SetDefaults(c.limits); err != nil {
		return err
	}
	tokenKeys, err := loadTokenKeys(c, log)
	if err != nil {
		return err
	}
	etcdEndpoints := splitList(c.etcd)
	if len(etcdEndpoints) == 0 {
		cluster, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{
			Dir:         filepath.Join(c.dataDir, "etcd"),
			ClientAddrs: []string{c.embeddedEtcdListen},
		})
		if err != nil {
			return err
		}
		defer cluster.Close()
		etcdEndpoints = cluster.Endpoints()
		log.Info("embedded etcd serving", "endpoints", etcdEndpoints)
	}
	natsURL := c.nats
	if natsURL == "" {
		srv, err := embedded.StartNATS(embedded.NATSOptions{Addr: c.embeddedNATSAddr, StoreDir: filepath.Join(c.dataDir, "nats")})
		if err != nil {
			return err
		}
		defer srv.Close()
		natsURL = srv.URL()
		log.Info("embedded NATS serving", "url", natsURL)
	}
	r, err := replica.New(ctx, replica.Options{
		ReplicaID:      c.replicaID,
		Listen:         c.listen,
		EtcdEndpoints:  etcdEndpoints,
		NATSURL:        natsURL,
		Prefix:         c.prefix,
		Keys:           keys,
		PublicURL:      strings.TrimSuffix(c.publicURL, "/"),
		Policy:         c.policy,
		TokenKeys:      tokenKeys,
		ViewerTokenTTL: c.viewerTokenTTL,
		TLSCertFile:    c.tlsCert,
		TLSKeyFile:     c.tlsKey,
		Supervisor: supervisor.Options{
			ElectionTTL:    c.leaseTTL,
			HealthInterval: c.healthInterval,
			HealthFailures: c.healthFailures,
			Retention:      c.retention,
		},
		Log: log,
	})
	if err != nil {
		return err
	}
	fmt.Printf("AvatarFleet control plane: %s\n", displayURL(r.Addr(), c.tlsCert != ""))
	if generated != "" {
		fmt.Printf("API key (all scopes, saved in %s): %s\n", filepath.Join(c.dataDir, "api-key"), generated)
	}
	return r.Run(ctx)
}

// loadKeys returns the API keys: AVATARFLEET_API_KEY, or --api-keys-file, or
// a key kept in <data-dir>/api-key (made on first start). The key it made or
// read from the data dir is returned so it can be shown.
func loadKeys(c config) (*auth.Keys, string, error) {
	if k := os.Getenv("AVATARFLEET_API_KEY"); k != "" {
		keys := &auth.Keys{}
		if err := keys.Add(k, auth.ScopeSessions, auth.ScopeAdmin); err != nil {
			return nil, "", fmt.Errorf("AVATARFLEET_API_KEY: %w", err)
		}
		return keys, "", nil
	}
	if c.apiKeysFile != "" {
		keys, err := auth.LoadFile(c.apiKeysFile)
		return keys, "", err
	}
	path := filepath.Join(c.dataDir, "api-key")
	secret := ""
	if b, err := os.ReadFile(path); err == nil {
		secret = strings.TrimSpace(string(b))
	} else if errors.Is(err, os.ErrNotExist) {
		secret = auth.Generate()
		if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
			return nil, "", fmt.Errorf("data dir: %w", err)
		}
		if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			return nil, "", fmt.Errorf("write API key: %w", err)
		}
	} else {
		return nil, "", fmt.Errorf("read API key: %w", err)
	}
	keys := &auth.Keys{}
	if err := keys.Add(secret, auth.ScopeSessions, auth.ScopeAdmin); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return keys, secret, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func displayURL(addr string, tls bool) string {
	scheme := "http://"
	if tls {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return scheme + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return scheme + net.JoinHostPort(host, port) + "/"
}

// loadTokenKeys reads --token-keys-file or, without one, the keys file in
// the data dir, made with one fresh key on first start.
func loadTokenKeys(c config, log *slog.Logger) (*viewertoken.KeySet, error) {
	if c.tokenKeysFile != "" {
		return viewertoken.LoadKeysFile(c.tokenKeysFile)
	}
	path := filepath.Join(c.dataDir, "token-keys.yaml")
	ks, created, err := viewertoken.LoadOrCreateKeysFile(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("made a session-token signing key", "file", path, "id", ks.Signing().ID)
	}
	return ks, nil
}
