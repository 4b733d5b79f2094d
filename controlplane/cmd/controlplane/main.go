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

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/replica"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/webhooks"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetconfig"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func main() {
	c, err := ParseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(2)
	}
	log := c.Log.Logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("control plane failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c Config, log *slog.Logger) error {
	keys, generated, err := loadKeys(c)
	if err != nil {
		return err
	}
	if err := keys.SetDefaults(c.Limits); err != nil {
		return err
	}
	tokenKeys, err := loadTokenKeys(c, log)
	if err != nil {
		return err
	}
	fleetTLS, err := fleetMaterial(c, log)
	if err != nil {
		return err
	}
	etcdCfg, natsCfg, closeEmbedded, err := connections(ctx, c, log)
	if err != nil {
		return err
	}
	defer closeEmbedded()
	r, err := replica.New(ctx, replica.Options{
		ReplicaID:      c.ReplicaID,
		Listen:         c.Listen,
		Etcd:           etcdCfg,
		NATS:           natsCfg,
		FleetTLS:       fleetTLS,
		Prefix:         c.EtcdPrefix,
		Keys:           keys,
		PublicURL:      strings.TrimSuffix(c.PublicURL, "/"),
		Policy:         c.PlacementPolicy,
		ViewerTokenTTL: c.ViewerTokenTTL,
		TokenKeys:      tokenKeys,
		TLSCertFile:    c.TLSCertFile,
		TLSKeyFile:     c.TLSKeyFile,
		Supervisor: supervisor.Options{
			ElectionTTL:    c.LeaderTTL,
			HealthInterval: c.HealthInterval,
			HealthFailures: c.HealthFailures,
			SuspectAfter:   c.SuspectAfter,
			NoFence:        c.NoFence,
			Retention:      c.SessionRetention,
		},
		Webhooks: webhooks.Options{
			Retry:   webhooks.Retry{MaxAttempts: c.WebhookMaxAttempts, Initial: c.WebhookRetryInitial, Max: c.WebhookRetryMax},
			Timeout: c.WebhookTimeout,
		},
		Log:               log,
		TestHookMarkDelay: c.TestHookMarkDelay,
	})
	if err != nil {
		return err
	}
	if c.TestHookMarkDelay > 0 {
		log.Warn("test hook: ready marks are held back", "env", TestHookMarkDelayEnv, "delay", c.TestHookMarkDelay)
	}
	fmt.Printf("AvatarFleet control plane: %s\n", displayURL(r.Addr(), c.TLSCertFile != ""))
	if generated != "" {
		fmt.Printf("API key (all scopes, saved in %s): %s\n", filepath.Join(c.DataDir, "api-key"), generated)
	}
	return r.Run(ctx)
}

// connections are the etcd and NATS the replica uses: the --etcd and --nats
// servers with the link flags' TLS and credentials, or servers embedded in
// this process. The embedded ones require credentials too: the control
// plane makes them once under <data-dir>/secrets/ (etcd roles and users,
// NATS users with per-role permissions), and a worker on this machine with
// the same data dir logs in with them (development only).
func connections(ctx context.Context, c Config, log *slog.Logger) (etcdCfg fleetconn.EtcdConfig, natsCfg fleetconn.NATSConfig, closeAll func(), err error) {
	var closers []func()
	closeAll = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	secrets := embedded.DevSecretsDir(c.DataDir)
	if etcdEndpoints := fleetconfig.SplitList(c.Etcd); len(etcdEndpoints) > 0 {
		if etcdCfg, err = c.Links.Etcd(etcdEndpoints, os.Getenv); err != nil {
			return
		}
	} else {
		es, err2 := embedded.LoadEtcdSecrets(secrets)
		if err = err2; err != nil {
			return
		}
		cluster, err2 := embedded.StartEtcd(ctx, embedded.EtcdOptions{
			Dir:         filepath.Join(c.DataDir, "etcd"),
			ClientAddrs: []string{c.EmbeddedEtcdListen},
		})
		if err = err2; err != nil {
			return
		}
		closers = append(closers, cluster.Close)
		base := fleetconn.EtcdConfig{Endpoints: cluster.Endpoints()}
		if err = es.Setup(ctx, base, fleetstore.NewKeys(c.EtcdPrefix)); err != nil {
			return
		}
		etcdCfg = es.ControlPlaneConfig(cluster.Endpoints())
		log.Info("embedded etcd serving, authentication on", "endpoints", cluster.Endpoints(), "secrets", secrets)
	}
	name := "avatarfleet-controlplane-" + c.ReplicaID
	if c.NATS != "" {
		natsCfg, err = c.Links.NATS(c.NATS, name, os.Getenv)
		return
	}
	ns, err := embedded.LoadNATSSecrets(secrets)
	if err != nil {
		return
	}
	srv, err := embedded.StartNATS(embedded.NATSOptions{
		Addr:     c.EmbeddedNATSListen,
		StoreDir: filepath.Join(c.DataDir, "nats"),
		Auth:     ns.Auth(),
	})
	if err != nil {
		return
	}
	closers = append(closers, srv.Close)
	natsCfg = ns.ControlPlaneConfig(srv.URL())
	natsCfg.Name = name
	log.Info("embedded NATS serving, authentication on", "url", srv.URL())
	return
}

// loadKeys returns the API keys: AVATARFLEET_API_KEY, or --api-keys-file, or
// a key kept in <data-dir>/api-key (made on first start). The key it made or
// read from the data dir is returned so it can be shown.
func loadKeys(c Config) (*auth.Keys, string, error) {
	if k := os.Getenv("AVATARFLEET_API_KEY"); k != "" {
		keys := &auth.Keys{}
		if err := keys.Add(k, auth.ScopeSessions, auth.ScopeAdmin); err != nil {
			return nil, "", fmt.Errorf("AVATARFLEET_API_KEY: %w", err)
		}
		return keys, "", nil
	}
	if c.APIKeysFile != "" {
		keys, err := auth.LoadFile(c.APIKeysFile)
		return keys, "", err
	}
	path := filepath.Join(c.DataDir, "api-key")
	secret := ""
	if b, err := os.ReadFile(path); err == nil {
		secret = strings.TrimSpace(string(b))
	} else if errors.Is(err, os.ErrNotExist) {
		secret = auth.Generate()
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
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

// fleetMaterial is the control plane's fleet TLS: the --fleet-* files; or,
// for the embedded single-machine fleet, the development PKI under the
// data dir (made on first start); or nothing when --fleet-insecure allows
// it. Anything else is refused, so a deployment never runs its worker
// links unauthenticated by accident.
func fleetMaterial(c Config, log *slog.Logger) (*fleetpki.Material, error) {
	if files := c.Links.Fleet(); files.Set() {
		m, err := files.Load()
		if err != nil {
			return nil, fmt.Errorf("fleet TLS: %w", err)
		}
		if err := m.Names(fleetpki.ControlPlaneURI); err != nil {
			return nil, fmt.Errorf("--fleet-cert is not a control plane's: %w", err)
		}
		return m, nil
	}
	if c.Embedded() {
		dir := fleetpki.DevDir(c.DataDir)
		files, created, err := fleetpki.EnsureDevControlPlane(dir)
		if err != nil {
			return nil, fmt.Errorf("development PKI: %w", err)
		}
		if created {
			log.Info("made a development fleet CA; workers on this machine with the same --data-dir use it (development only: use avatarctl certs for a deployment)", "dir", dir)
		}
		m, err := files.Load()
		if err != nil {
			return nil, fmt.Errorf("development PKI: %w", err)
		}
		return m, nil
	}
	if c.Links.FleetInsecure {
		log.Warn("fleet TLS off: worker gRPC is plaintext and unauthenticated (--fleet-insecure)")
		return nil, nil
	}
	return nil, errors.New("no fleet certificate: set --fleet-ca, --fleet-cert and --fleet-key (see avatarctl certs), or --fleet-insecure on a trusted network")
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
// the data dir (made with one fresh key on first start).
func loadTokenKeys(c Config, log *slog.Logger) (*viewertoken.KeySet, error) {
	if c.TokenKeysFile != "" {
		return viewertoken.LoadKeysFile(c.TokenKeysFile)
	}
	path := filepath.Join(c.DataDir, "token-keys.yaml")
	ks, created, err := viewertoken.LoadOrCreateKeysFile(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("made a session-token signing key", "file", path, "id", ks.Signing().ID)
	}
	return ks, nil
}
