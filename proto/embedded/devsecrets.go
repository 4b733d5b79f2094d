package embedded

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// DevSecretsDir is where the embedded single-machine default keeps its etcd
// and NATS secrets under a data dir. A worker given the same data dir (and
// no credentials of its own) logs in with them: development only, like the
// development CA beside them.
func DevSecretsDir(dataDir string) string { return filepath.Join(dataDir, "secrets") }

// HasEtcdSecrets reports whether dir holds the embedded etcd's secrets
// (made by a control plane that runs the embedded etcd).
func HasEtcdSecrets(dir string) bool { return exists(filepath.Join(dir, etcdRootFile)) }

// HasNATSSecrets reports whether dir holds the embedded NATS's secrets.
func HasNATSSecrets(dir string) bool { return exists(filepath.Join(dir, natsWorkerSecretFile)) }

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// EnrollWorker gives worker id its etcd user (as root, which the data dir's
// secrets allow) and returns the configuration the worker connects with:
// base's endpoints and TLS with the worker's credentials. etcd may still be
// starting, so it retries until ctx ends or wait passes.
func (s EtcdSecrets) EnrollWorker(ctx context.Context, base fleetconn.EtcdConfig, keys fleetstore.Keys, id string, wait time.Duration) (fleetconn.EtcdConfig, error) {
	root := base
	root.Username, root.Password = fleetstore.RootUser, s.RootPassword
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var last error
	for {
		if last = s.enroll(ctx, root, keys, id); last == nil {
			out := base
			out.Username, out.Password = fleetstore.WorkerUser(id), s.WorkerPassword(id)
			return out, nil
		}
		select {
		case <-ctx.Done():
			return base, fmt.Errorf("enroll worker %s in the embedded etcd: %w", id, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (s EtcdSecrets) enroll(ctx context.Context, root fleetconn.EtcdConfig, keys fleetstore.Keys, id string) error {
	cli, err := fleetconn.Etcd(ctx, root)
	if err != nil {
		return err
	}
	defer cli.Close()
	return fleetstore.AddWorkerAuth(ctx, cli, keys, id, s.WorkerPassword(id))
}
