package embedded

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
)

// Files under the data dir that hold the embedded NATS secrets.
const (
	natsControlPlaneFile = "nats-controlplane-password"
	natsWorkerSecretFile = "nats-worker-secret"
)

// NATSSecrets are the secrets of the embedded default's NATS: the control
// plane's password and the secret worker passwords derive from.
type NATSSecrets struct {
	ControlPlanePassword string
	WorkerSecret         []byte
}

// LoadNATSSecrets reads the embedded NATS secrets from dir, creating them
// (mode 0600) on first use, so a restart keeps the same credentials.
func LoadNATSSecrets(dir string) (NATSSecrets, error) {
	cp, err := LoadOrCreateSecret(filepath.Join(dir, natsControlPlaneFile))
	if err != nil {
		return NATSSecrets{}, err
	}
	ws, err := LoadOrCreateSecret(filepath.Join(dir, natsWorkerSecretFile))
	if err != nil {
		return NATSSecrets{}, err
	}
	return NATSSecrets{ControlPlanePassword: cp, WorkerSecret: []byte(ws)}, nil
}

// Auth is the server side: the control plane logs in as ControlPlaneUser,
// workers with their derived passwords or, where the server verifies client
// certificates, with their fleet certificates.
func (s NATSSecrets) Auth() *NATSAuth {
	return &NATSAuth{
		Users:           []NATSUser{{Name: ControlPlaneUser, Password: s.ControlPlanePassword, Permissions: ControlPlanePermissions()}},
		WorkerSecret:    s.WorkerSecret,
		MapCertificates: true,
	}
}

// ControlPlaneConfig is how a control plane connects to a server run with
// Auth, at url.
func (s NATSSecrets) ControlPlaneConfig(url string) fleetconn.NATSConfig {
	return fleetconn.NATSConfig{URL: url, User: ControlPlaneUser, Password: s.ControlPlanePassword}
}

// WorkerConfig is how worker id connects to a server run with Auth, at url.
func (s NATSSecrets) WorkerConfig(url, id string) fleetconn.NATSConfig {
	return fleetconn.NATSConfig{URL: url, User: WorkerUser(id), Password: WorkerPassword(s.WorkerSecret, id),
		InboxPrefix: fleetbus.WorkerInboxPrefix(id)}
}

// LoadOrCreateSecret returns the secret in path, writing a new random one
// there if the file does not exist.
func LoadOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("secret file %s is empty", path)
		}
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read secret: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	s := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("secret dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) { // created meanwhile by another process
			return LoadOrCreateSecret(path)
		}
		return "", fmt.Errorf("create secret: %w", err)
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("write secret %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write secret %s: %w", path, err)
	}
	return s, nil
}
