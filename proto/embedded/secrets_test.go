package embedded_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func TestSecretsPersistUnderTheDataDir(t *testing.T) {
	dir := t.TempDir()
	n1, err := embedded.LoadNATSSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	e1, err := embedded.LoadEtcdSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := embedded.LoadNATSSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := embedded.LoadEtcdSecrets(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n1.ControlPlanePassword != n2.ControlPlanePassword || string(n1.WorkerSecret) != string(n2.WorkerSecret) ||
		e1.RootPassword != e2.RootPassword || e1.WorkerPassword("w") != e2.WorkerPassword("w") {
		t.Fatal("secrets changed on reload")
	}
	if len(n1.ControlPlanePassword) < 40 || n1.ControlPlanePassword == e1.ControlPlanePassword || e1.RootPassword == e1.ControlPlanePassword {
		t.Fatal("secrets are short or shared")
	}
	if e1.WorkerPassword("w1") == e1.WorkerPassword("w2") ||
		embedded.WorkerPassword(n1.WorkerSecret, "w1") == embedded.WorkerPassword(n1.WorkerSecret, "w2") {
		t.Fatal("two workers share a password")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 5 {
		t.Fatalf("%d secret files, want 5", len(entries))
	}
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", e.Name(), fi.Mode().Perm())
		}
	}
}

func TestEtcdSecretsSetupRunsAtEveryStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cluster, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{Dir: t.TempDir(), NoFsync: true, BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	secrets, err := embedded.LoadEtcdSecrets(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys := fleetstore.NewKeys("")
	base := fleetconn.EtcdConfig{Endpoints: cluster.Endpoints()}
	for i, workers := range [][]string{{"w1"}, {"w1", "w2"}} { // a first start, then a restart
		if err := secrets.Setup(ctx, base, keys, workers...); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
	for _, cfg := range []fleetconn.EtcdConfig{secrets.ControlPlaneConfig(base.Endpoints), secrets.WorkerConfig(base.Endpoints, "w2")} {
		cli, err := fleetconn.Etcd(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cli.Get(ctx, keys.Worker("w2"))
		_ = cli.Close()
		if err != nil {
			t.Fatalf("%s reads w2's record: %v", cfg.Username, err)
		}
	}
	anon, err := fleetconn.Etcd(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Get(ctx, keys.Worker("w2")); err == nil {
		t.Fatal("anonymous read served")
	}
}
