package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func freeAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", repotest.FreePort(t, "tcp")) }

// The embedded default runs etcd and NATS with authentication on: an
// anonymous client is refused by both, the control plane's own
// configuration works, and a worker enrolled from the data dir's secrets
// gets its own etcd role (it cannot list other workers).
func TestEmbeddedDefaultRequiresCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var (
		c        Config
		etcdCfg  fleetconn.EtcdConfig
		natsCfg  fleetconn.NATSConfig
		closeAll func()
		err      error
	)
	for attempt := 1; ; attempt++ { // a free port can be taken before it is bound
		c = Config{
			DataDir:            t.TempDir(),
			EmbeddedEtcdListen: freeAddr(t),
			EmbeddedNATSListen: freeAddr(t),
			EtcdPrefix:         fleetstore.DefaultPrefix,
			ReplicaID:          "test",
		}
		etcdCfg, natsCfg, closeAll, err = connections(ctx, c, log)
		if err == nil || attempt == repotest.PortAttempts || !repotest.PortCollision([]byte(err.Error())) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()

	anon, err := fleetconn.Etcd(ctx, fleetconn.EtcdConfig{Endpoints: etcdCfg.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Get(ctx, "/"); err == nil {
		t.Error("an anonymous etcd client read the fleet")
	}
	anon.Close()
	if nc, err := nats.Connect(natsCfg.URL); err == nil {
		nc.Close()
		t.Error("an anonymous NATS client connected")
	}

	keys := fleetstore.NewKeys(c.EtcdPrefix)
	cp, err := fleetconn.Etcd(ctx, etcdCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if _, err := cp.Put(ctx, keys.Worker("other"), "x"); err != nil {
		t.Fatalf("control plane writes the fleet: %v", err)
	}
	nc, err := fleetconn.NATS(natsCfg)
	if err != nil {
		t.Fatalf("control plane connects to NATS: %v", err)
	}
	nc.Close()

	es, err := embedded.LoadEtcdSecrets(embedded.DevSecretsDir(c.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	wcfg, err := es.EnrollWorker(ctx, fleetconn.EtcdConfig{Endpoints: etcdCfg.Endpoints}, keys, "w1", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w, err := fleetconn.Etcd(ctx, wcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Put(ctx, keys.Worker("w1"), "mine"); err != nil {
		t.Fatalf("worker writes its own record: %v", err)
	}
	if _, err := w.Get(ctx, keys.Worker("other")); err == nil {
		t.Error("worker w1 read another worker's record")
	}
}
