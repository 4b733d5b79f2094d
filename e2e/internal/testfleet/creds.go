package testfleet

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// testBcryptCost is bcrypt's minimum: etcd hashes every user's password
// with it, and the default cost takes a noticeable part of a second per
// user on a busy machine.
const testBcryptCost = 4

// credentials are a fleet's etcd and NATS secrets and the TLS of both
// servers, as a deployment runs them: etcd with authentication (root, the
// control-plane role, one role per worker) over TLS, NATS with per-role
// users and permissions over TLS. The servers' certificate is issued by the
// fleet CA, which every client trusts.
type credentials struct {
	etcd embedded.EtcdSecrets
	nats embedded.NATSSecrets
	// serverCert and serverKey are the files of etcd's and NATS's
	// certificate; caFile is the fleet CA's certificate.
	serverCert, serverKey, caFile string
	natsTLS                       *tls.Config
}

// newCredentials makes a fleet's secrets and server certificate in dir.
func newCredentials(dir string, ca *fleetpki.CA) (*credentials, error) {
	c := &credentials{}
	var err error
	if c.etcd, err = embedded.LoadEtcdSecrets(dir); err != nil {
		return nil, fmt.Errorf("etcd secrets: %w", err)
	}
	if c.nats, err = embedded.LoadNATSSecrets(dir); err != nil {
		return nil, fmt.Errorf("nats secrets: %w", err)
	}
	// fleetpki issues control-plane and worker certificates only; the data
	// tier's servers get a control-plane one for loopback, which no client
	// checks for an identity beyond the host name.
	is, err := ca.Issue(fleetpki.Request{ControlPlane: true, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	if err := is.WriteFiles(dir, "server"); err != nil {
		return nil, fmt.Errorf("write server certificate: %w", err)
	}
	c.serverCert, c.serverKey = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	c.caFile = filepath.Join(dir, "fleet-ca.crt")
	if err := os.WriteFile(c.caFile, ca.CertPEM(), 0o600); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	id, err := is.Identity()
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	c.natsTLS = &tls.Config{Certificates: []tls.Certificate{id}, MinVersion: tls.VersionTLS12}
	return c, nil
}

// etcdServerTLS is etcd's client-side TLS: its certificate, no client
// certificates asked (clients log in with passwords).
func (c *credentials) etcdServerTLS() *transport.TLSInfo {
	return &transport.TLSInfo{CertFile: c.serverCert, KeyFile: c.serverKey}
}

// clientTLS is what every client of etcd and NATS trusts: the fleet CA.
func (c *credentials) clientTLS() fleetconn.TLSFiles {
	return fleetconn.TLSFiles{CAFile: c.caFile}
}

// etcdBase is how to reach the fleet's etcd, without credentials.
func (f *Fleet) etcdBase() fleetconn.EtcdConfig {
	cfg := fleetconn.EtcdConfig{Endpoints: f.Etcd.Endpoints()}
	if f.creds != nil {
		cfg.TLS = f.creds.clientTLS()
	}
	return cfg
}

// RootEtcd is how a test reaches etcd with every right (etcd's root user
// when the fleet runs with credentials).
func (f *Fleet) RootEtcd() fleetconn.EtcdConfig {
	cfg := f.etcdBase()
	if f.creds != nil {
		cfg.Username, cfg.Password = fleetstore.RootUser, f.creds.etcd.RootPassword
	}
	return cfg
}

// ControlPlaneEtcd is how a control-plane replica reaches etcd.
func (f *Fleet) ControlPlaneEtcd() fleetconn.EtcdConfig {
	if f.creds == nil {
		return f.etcdBase()
	}
	cfg := f.creds.etcd.ControlPlaneConfig(f.Etcd.Endpoints())
	cfg.TLS = f.creds.clientTLS()
	return cfg
}

// ControlPlaneNATS is how a control-plane replica (or a test that listens
// to the fleet's events) reaches NATS.
func (f *Fleet) ControlPlaneNATS() fleetconn.NATSConfig {
	if f.creds == nil {
		return fleetconn.NATSConfig{URL: f.NATS.URL()}
	}
	cfg := f.creds.nats.ControlPlaneConfig(f.NATS.URL())
	cfg.TLS = f.creds.clientTLS()
	return cfg
}

// workerLinks returns how worker id reaches etcd and the NATS at natsURL,
// enrolling it in etcd (its user and role, made as root) unless Start or
// an earlier call did. Another NATS than the fleet's (a test's island) is
// plaintext and open: the worker keeps its credentials, which such a
// server ignores.
func (f *Fleet) workerLinks(ctx context.Context, id, natsURL string) (fleetconn.EtcdConfig, fleetconn.NATSConfig, error) {
	if f.creds == nil {
		return f.etcdBase(), fleetconn.NATSConfig{URL: natsURL}, nil
	}
	f.mu.Lock()
	enrolled := f.enrolled[id]
	f.mu.Unlock()
	etcdCfg := f.WorkerEtcd(id)
	if !enrolled {
		// A new user changes etcd's auth revision: every client logs in
		// again, and a watch the control plane recreates with a token of
		// before fails once; the fleet must live through that.
		var err error
		if etcdCfg, err = f.creds.etcd.EnrollWorker(ctx, f.etcdBase(), f.Store.Keys(), id, 30*time.Second); err != nil {
			return fleetconn.EtcdConfig{}, fleetconn.NATSConfig{}, err
		}
		f.mu.Lock()
		f.enrolled[id] = true
		f.mu.Unlock()
	}
	natsCfg := f.creds.nats.WorkerConfig(natsURL, id)
	if natsURL == f.NATS.URL() {
		natsCfg.TLS = f.creds.clientTLS()
	}
	return etcdCfg, natsCfg, nil
}

// WorkerEtcd is how worker id (once started) reaches etcd: its own user,
// whose role covers only its keys, when the fleet runs with credentials.
func (f *Fleet) WorkerEtcd(id string) fleetconn.EtcdConfig {
	if f.creds == nil {
		return f.etcdBase()
	}
	cfg := f.creds.etcd.WorkerConfig(f.Etcd.Endpoints(), id)
	cfg.TLS = f.creds.clientTLS()
	return cfg
}

// ControlPlaneTLS is the fleet TLS material the fleet's replicas use (nil
// with FleetInsecure), for a test that starts a replica of its own.
func (f *Fleet) ControlPlaneTLS() *fleetpki.Material { return f.cpTLS }

// ControlPlaneJetStream is a JetStream client with the control plane's NATS
// credentials, for tests that read the events stream or its consumers; its
// connection closes when the test ends.
func (f *Fleet) ControlPlaneJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := fleetconn.NATS(f.ControlPlaneNATS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
