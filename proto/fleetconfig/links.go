package fleetconfig

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// Environment variables of secrets that have no flag (flags show in
// process listings).
var (
	EtcdPasswordEnv = EnvPrefix + "ETCD_PASSWORD"
	NATSPasswordEnv = EnvPrefix + "NATS_PASSWORD"
)

// Links are the settings of a binary's links to the rest of the fleet:
// the fleet's mutual TLS between control planes and workers, and the TLS
// and credentials of etcd and NATS. Both binaries register the same flags.
type Links struct {
	FleetCA, FleetCert, FleetKey string
	// FleetInsecure allows plaintext gRPC between control plane and
	// workers when no fleet certificate is set.
	FleetInsecure bool

	EtcdCA, EtcdCert, EtcdKey      string
	EtcdUsername, EtcdPasswordFile string

	NATSCreds, NATSNKey        string
	NATSUser, NATSPasswordFile string
	NATSCA, NATSCert, NATSKey  string
}

// AddFlags registers the flags of l.
func (l *Links) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&l.FleetCA, "fleet-ca", "", "fleet CA certificate (PEM) for mutual TLS between control plane and workers")
	fs.StringVar(&l.FleetCert, "fleet-cert", "", "this party's fleet certificate (PEM), issued by the fleet CA")
	fs.StringVar(&l.FleetKey, "fleet-key", "", "key of --fleet-cert (PEM)")
	fs.BoolVar(&l.FleetInsecure, "fleet-insecure", false, "allow plaintext, unauthenticated gRPC between control plane and workers when no fleet certificate is found (trusted networks only)")
	fs.StringVar(&l.EtcdCA, "etcd-ca", "", "CA certificate (PEM) of etcd's server certificate")
	fs.StringVar(&l.EtcdCert, "etcd-cert", "", "client certificate (PEM) for etcd")
	fs.StringVar(&l.EtcdKey, "etcd-key", "", "key of --etcd-cert (PEM)")
	fs.StringVar(&l.EtcdUsername, "etcd-username", "", "etcd user (password from "+EtcdPasswordEnv+" or --etcd-password-file)")
	fs.StringVar(&l.EtcdPasswordFile, "etcd-password-file", "", "file holding the password of --etcd-username")
	fs.StringVar(&l.NATSCreds, "nats-creds", "", "NATS credentials file (user JWT and nkey seed)")
	fs.StringVar(&l.NATSNKey, "nats-nkey", "", "file holding a NATS nkey seed")
	fs.StringVar(&l.NATSUser, "nats-user", "", "NATS user (password from "+NATSPasswordEnv+" or --nats-password-file)")
	fs.StringVar(&l.NATSPasswordFile, "nats-password-file", "", "file holding the password of --nats-user")
	fs.StringVar(&l.NATSCA, "nats-ca", "", "CA certificate (PEM) of the NATS server's certificate")
	fs.StringVar(&l.NATSCert, "nats-cert", "", "client certificate (PEM) for NATS")
	fs.StringVar(&l.NATSKey, "nats-key", "", "key of --nats-cert (PEM)")
}

// Fleet are the fleet TLS files.
func (l Links) Fleet() fleetpki.Files {
	return fleetpki.Files{CA: l.FleetCA, Cert: l.FleetCert, Key: l.FleetKey}
}

// Validate checks what can be checked without endpoints: files that go
// together, files that exist, one NATS authentication method.
func (l Links) Validate() error {
	if f := l.Fleet(); f.Set() {
		if f.CA == "" || f.Cert == "" || f.Key == "" {
			return errors.New("--fleet-ca, --fleet-cert and --fleet-key go together")
		}
	}
	if (l.EtcdCert == "") != (l.EtcdKey == "") {
		return errors.New("--etcd-cert and --etcd-key go together")
	}
	if (l.NATSCert == "") != (l.NATSKey == "") {
		return errors.New("--nats-cert and --nats-key go together")
	}
	if l.EtcdPasswordFile != "" && l.EtcdUsername == "" {
		return errors.New("--etcd-password-file needs --etcd-username")
	}
	if l.NATSPasswordFile != "" && l.NATSUser == "" {
		return errors.New("--nats-password-file needs --nats-user")
	}
	n := 0
	for _, s := range []string{l.NATSCreds, l.NATSNKey, l.NATSUser} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return errors.New("--nats-creds, --nats-nkey and --nats-user: choose one")
	}
	for _, f := range []struct{ flag, path string }{
		{"--fleet-ca", l.FleetCA}, {"--fleet-cert", l.FleetCert}, {"--fleet-key", l.FleetKey},
		{"--etcd-ca", l.EtcdCA}, {"--etcd-cert", l.EtcdCert}, {"--etcd-key", l.EtcdKey}, {"--etcd-password-file", l.EtcdPasswordFile},
		{"--nats-creds", l.NATSCreds}, {"--nats-nkey", l.NATSNKey}, {"--nats-password-file", l.NATSPasswordFile},
		{"--nats-ca", l.NATSCA}, {"--nats-cert", l.NATSCert}, {"--nats-key", l.NATSKey},
	} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.flag, err)
		} else if st.IsDir() {
			return fmt.Errorf("%s %q is a directory, want a file", f.flag, f.path)
		}
	}
	return nil
}

// Etcd is the etcd connection configuration for endpoints (bare host:port
// endpoints get http://, or https:// when etcd TLS is set). The password
// comes from --etcd-password-file or the environment.
func (l Links) Etcd(endpoints []string, getenv func(string) string) (fleetconn.EtcdConfig, error) {
	c := fleetconn.EtcdConfig{
		TLS:      fleetconn.TLSFiles{CAFile: l.EtcdCA, CertFile: l.EtcdCert, KeyFile: l.EtcdKey},
		Username: l.EtcdUsername,
	}
	scheme := "http://"
	if c.TLS.Enabled() {
		scheme = "https://"
	}
	for _, e := range endpoints {
		if !strings.Contains(e, "://") {
			e = scheme + e
		}
		c.Endpoints = append(c.Endpoints, e)
	}
	pw, err := secret(l.EtcdPasswordFile, "--etcd-password-file", EtcdPasswordEnv, getenv)
	if err != nil {
		return c, err
	}
	if pw != "" && l.EtcdUsername == "" {
		return c, fmt.Errorf("%s is set but --etcd-username is not", EtcdPasswordEnv)
	}
	c.Password = pw
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("etcd settings: %w", err)
	}
	return c, nil
}

// NATS is the NATS connection configuration for url, named name in the
// server's monitoring. The password comes from --nats-password-file or the
// environment.
func (l Links) NATS(url, name string, getenv func(string) string) (fleetconn.NATSConfig, error) {
	c := fleetconn.NATSConfig{
		URL:       url,
		CredsFile: l.NATSCreds,
		NKeyFile:  l.NATSNKey,
		User:      l.NATSUser,
		TLS:       fleetconn.TLSFiles{CAFile: l.NATSCA, CertFile: l.NATSCert, KeyFile: l.NATSKey},
		Name:      name,
	}
	pw, err := secret(l.NATSPasswordFile, "--nats-password-file", NATSPasswordEnv, getenv)
	if err != nil {
		return c, err
	}
	if pw != "" && l.NATSUser == "" {
		return c, fmt.Errorf("%s is set but --nats-user is not", NATSPasswordEnv)
	}
	c.Password = pw
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("NATS settings: %w", err)
	}
	return c, nil
}

// secret reads a password from its file, else from the environment.
func secret(file, flagName, env string, getenv func(string) string) (string, error) {
	if file == "" {
		return getenv(env), nil
	}
	if getenv(env) != "" {
		return "", fmt.Errorf("both %s and %s are set: choose one", flagName, env)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("%s %s is empty", flagName, file)
	}
	return pw, nil
}
