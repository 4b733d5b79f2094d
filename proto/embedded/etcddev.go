package embedded

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Files under the data dir that hold the embedded etcd secrets.
const (
	etcdRootFile         = "etcd-root-password"
	etcdControlPlaneFile = "etcd-controlplane-password"
	etcdWorkerSecretFile = "etcd-worker-secret"
)

// EtcdSecrets are the secrets of the embedded default's etcd users: root,
// the control plane, and the secret each worker's password derives from.
type EtcdSecrets struct {
	RootPassword, ControlPlanePassword string
	WorkerSecret                       []byte
}

// LoadEtcdSecrets reads the embedded etcd secrets from dir, creating them
// (mode 0600) on first use.
func LoadEtcdSecrets(dir string) (EtcdSecrets, error) {
	var s EtcdSecrets
	var ws string
	for _, f := range []struct {
		name string
		to   *string
	}{{etcdRootFile, &s.RootPassword}, {etcdControlPlaneFile, &s.ControlPlanePassword}, {etcdWorkerSecretFile, &ws}} {
		v, err := LoadOrCreateSecret(filepath.Join(dir, f.name))
		if err != nil {
			return EtcdSecrets{}, err
		}
		*f.to = v
	}
	s.WorkerSecret = []byte(ws)
	return s, nil
}

// WorkerPassword is worker id's etcd password.
func (s EtcdSecrets) WorkerPassword(id string) string {
	m := hmac.New(sha256.New, s.WorkerSecret)
	m.Write([]byte("avatarfleet etcd worker\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Auth is what fleetstore.SetupAuth creates: root, the control plane and
// the users of workers (etcd needs a user per worker before it connects).
// The embedded etcd serves one fleet, so the control plane gets etcd's root
// role as well (fleetstore.Auth.ControlPlaneAdmin: without it etcd's lease
// checks make placement slow down with the sessions per worker).
func (s EtcdSecrets) Auth(workers ...string) fleetstore.Auth {
	a := fleetstore.Auth{RootPassword: s.RootPassword, ControlPlanePassword: s.ControlPlanePassword, Workers: map[string]string{},
		ControlPlaneAdmin: true}
	for _, id := range workers {
		a.Workers[id] = s.WorkerPassword(id)
	}
	return a
}

// RootConfig is how to connect as root (to run SetupAuth or AddWorkerAuth
// once authentication is on).
func (s EtcdSecrets) RootConfig(endpoints []string) fleetconn.EtcdConfig {
	return fleetconn.EtcdConfig{Endpoints: endpoints, Username: fleetstore.RootUser, Password: s.RootPassword}
}

// ControlPlaneConfig is how a control plane connects.
func (s EtcdSecrets) ControlPlaneConfig(endpoints []string) fleetconn.EtcdConfig {
	return fleetconn.EtcdConfig{Endpoints: endpoints, Username: fleetstore.ControlPlaneUser, Password: s.ControlPlanePassword}
}

// WorkerConfig is how worker id connects.
func (s EtcdSecrets) WorkerConfig(endpoints []string, id string) fleetconn.EtcdConfig {
	return fleetconn.EtcdConfig{Endpoints: endpoints, Username: fleetstore.WorkerUser(id), Password: s.WorkerPassword(id)}
}

// Setup creates the fleet's etcd users and roles (Auth(workers...)) under
// keys and turns authentication on, on the etcd base names (its endpoints
// and TLS; credentials are ignored). It runs at every start of the
// embedded default: the first time authentication is still off and it
// connects without credentials, later as root.
func (s EtcdSecrets) Setup(ctx context.Context, base fleetconn.EtcdConfig, keys fleetstore.Keys, workers ...string) error {
	cfg := base
	cfg.Username, cfg.Password = fleetstore.RootUser, s.RootPassword
	cli, err := fleetconn.Etcd(ctx, cfg)
	if errors.Is(err, rpctypes.ErrAuthNotEnabled) {
		cfg.Username, cfg.Password = "", ""
		cli, err = fleetconn.Etcd(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("etcd auth setup: %w", err)
	}
	defer cli.Close()
	return fleetstore.SetupAuth(ctx, cli, keys, s.Auth(workers...))
}
