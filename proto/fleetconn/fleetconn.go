// Package fleetconn turns the connection settings of the fleet's etcd and
// NATS (endpoints, TLS files, credentials) into configured clients. Both
// binaries read their settings into EtcdConfig and NATSConfig and connect
// through this package, so TLS and credentials behave the same everywhere.
// Errors name fields, never command-line flags.
package fleetconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DefaultDialTimeout bounds the first connection to etcd.
const DefaultDialTimeout = 5 * time.Second

// TLSFiles names PEM files of a TLS client: the CA that signs the server's
// certificate and, for mutual TLS, the client's own certificate and key.
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

// Enabled reports whether any TLS file is set.
func (f TLSFiles) Enabled() bool { return f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" }

// Validate checks that the certificate and key come together and that every
// named file exists.
func (f TLSFiles) Validate() error {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return errors.New("a client certificate needs its key and a key its certificate")
	}
	for _, p := range []string{f.CAFile, f.CertFile, f.KeyFile} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("tls file: %w", err)
		}
	}
	return nil
}

// EtcdConfig is how to reach etcd.
type EtcdConfig struct {
	// Endpoints are client URLs (http:// or https://).
	Endpoints []string
	// TLS is the client TLS of an https:// etcd.
	TLS TLSFiles
	// Username and Password authenticate to an etcd with auth enabled.
	Username, Password string
	// DialTimeout bounds the first connection (0 → DefaultDialTimeout).
	DialTimeout time.Duration
}

// Validate checks the configuration without connecting.
func (c EtcdConfig) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("etcd: no endpoints")
	}
	for _, e := range c.Endpoints {
		u, err := url.Parse(e)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("etcd endpoint %q: want http://host:port or https://host:port", e)
		}
		if u.Scheme == "https" && !c.TLS.Enabled() {
			return fmt.Errorf("etcd endpoint %q is https but no TLS files are set", e)
		}
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("etcd: a password needs a username")
	}
	return nil
}

// ClientConfig is the clientv3 configuration of c.
func (c EtcdConfig) ClientConfig() (clientv3.Config, error) {
	if err := c.Validate(); err != nil {
		return clientv3.Config{}, err
	}
	cfg := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		Username:    c.Username,
		Password:    c.Password,
		Logger:      zap.NewNop(),
		// Keepalives notice a silent member (a dead host, a partition)
		// within about three seconds, so the balancer moves its requests
		// to another endpoint; fleetstore's per-attempt timeouts and
		// retries cover the seconds before that.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: time.Second,
		PermitWithoutStream:  true,
		// A member that comes back is dialled again within a second
		// (gRPC's default backoff grows to two minutes).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if c.TLS.Enabled() {
		tc, err := c.TLS.clientTLS()
		if err != nil {
			return clientv3.Config{}, fmt.Errorf("etcd tls: %w", err)
		}
		cfg.TLS = tc
	}
	return cfg, nil
}

// Etcd connects to etcd. With credentials it authenticates at once, so bad
// credentials fail here rather than at the first request.
func Etcd(ctx context.Context, c EtcdConfig) (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.Context = ctx
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect etcd %v: %w", c.Endpoints, err)
	}
	return cli, nil
}

func (f TLSFiles) clientTLS() (*tls.Config, error) {
	info := transport.TLSInfo{CertFile: f.CertFile, KeyFile: f.KeyFile, TrustedCAFile: f.CAFile}
	return info.ClientConfig()
}

// NATSConfig is how to reach NATS. At most one of CredsFile, NKeyFile and
// User/Password is set.
type NATSConfig struct {
	// URL is the server URL (comma-separated for several).
	URL string
	// CredsFile is a NATS credentials file (user JWT and nkey seed).
	CredsFile string
	// NKeyFile holds an nkey seed.
	NKeyFile string
	// User and Password authenticate with a user name and password.
	User, Password string
	// TLS is the client TLS (CA of the server; certificate and key for
	// servers that verify clients, and map certificates to users).
	TLS TLSFiles
	// Name is the connection's name in the server's monitoring.
	Name string
	// InboxPrefix replaces "_INBOX" as the prefix of the connection's
	// reply subjects; a worker uses fleetbus.WorkerInboxPrefix, the only
	// inboxes its NATS permissions let it subscribe to.
	InboxPrefix string
}

// Validate checks the configuration without connecting.
func (c NATSConfig) Validate() error {
	if strings.TrimSpace(c.URL) == "" {
		return errors.New("nats: no URL")
	}
	for _, s := range strings.Split(c.URL, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Host == "" {
			return fmt.Errorf("nats URL %q: want nats://host:port or tls://host:port", s)
		}
	}
	n := 0
	for _, set := range []bool{c.CredsFile != "", c.NKeyFile != "", c.User != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("nats: choose one of a credentials file, an nkey seed file, or a user and password")
	}
	if c.Password != "" && c.User == "" {
		return errors.New("nats: a password needs a user")
	}
	for _, p := range []string{c.CredsFile, c.NKeyFile} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("nats credentials: %w", err)
		}
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	return nil
}

// Options are the nats.Options of c's TLS and credentials.
func (c NATSConfig) Options() ([]nats.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	if c.Name != "" {
		opts = append(opts, nats.Name(c.Name))
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", c.NKeyFile, err)
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.TLS.Enabled() {
		tc, err := c.TLS.clientTLS()
		if err != nil {
			return nil, fmt.Errorf("nats tls: %w", err)
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// NATS connects to NATS with c's settings and then extra's (reconnect
// policy, handlers).
func NATS(c NATSConfig, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", c.URL, err)
	}
	return nc, nil
}
