package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// devEnrollWait bounds how long a worker of the embedded default waits for
// the control plane's etcd to take its user.
const devEnrollWait = 60 * time.Second

// devCredentials gives a worker that was given no etcd or NATS credentials
// those of the embedded default, when its --data-dir holds the secrets the
// embedded control plane made there (`make run`: both share .avatarfleet).
// For etcd it creates the worker's own user and role as root first, so the
// worker then runs with only its role's rights. Development only, like the
// development CA beside the secrets; a deployment passes the link flags.
func (c *config) devCredentials(ctx context.Context, log *slog.Logger) error {
	dir := embedded.DevSecretsDir(c.dataDir)
	if c.opts.Etcd.Username == "" && embedded.HasEtcdSecrets(dir) {
		es, err := embedded.LoadEtcdSecrets(dir)
		if err != nil {
			return err
		}
		cfg, err := es.EnrollWorker(ctx, c.opts.Etcd, fleetstore.NewKeys(c.opts.EtcdPrefix), c.opts.ID, devEnrollWait)
		if err != nil {
			return err
		}
		c.opts.Etcd = cfg
		log.Warn("etcd credentials from the embedded default's data dir (development only)", "dir", dir, "user", cfg.Username)
	}
	n := c.opts.NATS
	if n.User == "" && n.CredsFile == "" && n.NKeyFile == "" && n.TLS.CertFile == "" && embedded.HasNATSSecrets(dir) {
		ns, err := embedded.LoadNATSSecrets(dir)
		if err != nil {
			return err
		}
		cfg := ns.WorkerConfig(n.URL, c.opts.ID)
		cfg.Name, cfg.TLS = n.Name, n.TLS
		c.opts.NATS = cfg
		log.Warn("NATS credentials from the embedded default's data dir (development only)", "dir", dir, "user", cfg.User)
	}
	return nil
}
