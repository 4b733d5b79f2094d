package testfleet_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
)

// TestCredentialsOn: a default test fleet serves placements while its etcd
// and NATS refuse whoever lacks TLS or credentials, and a worker's etcd
// user cannot write outside its own keys — so the invariant tests that use
// it run with the links secured as deployed.
func TestCredentialsOn(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w0"}}})
	if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, map[string]any{}); r.Status != http.StatusCreated {
		t.Fatalf("create session: %d %s", r.Status, r.Body)
	}

	anonymous := f.ControlPlaneEtcd()
	anonymous.Username, anonymous.Password = "", ""
	for _, tt := range []struct {
		name string
		try  func(ctx context.Context) error
	}{
		{"etcd in plaintext (times out)", func(ctx context.Context) error {
			cli, err := f.Etcd.Client()
			if err != nil {
				return err
			}
			defer cli.Close()
			_, err = cli.Get(ctx, "probe")
			return err
		}},
		{"etcd without credentials", func(ctx context.Context) error {
			cli, err := fleetconn.Etcd(ctx, anonymous)
			if err != nil {
				return err
			}
			defer cli.Close()
			_, err = cli.Get(ctx, "probe")
			return err
		}},
		{"etcd with a wrong password", func(ctx context.Context) error {
			cfg := f.ControlPlaneEtcd()
			cfg.Password += "x"
			cli, err := fleetconn.Etcd(ctx, cfg)
			if err == nil {
				cli.Close()
			}
			return err
		}},
		{"etcd as a worker, another worker's key", func(ctx context.Context) error {
			cli, err := fleetconn.Etcd(ctx, f.WorkerEtcd("w0"))
			if err != nil {
				t.Fatalf("worker w0's own credentials: %v", err)
			}
			defer cli.Close()
			if _, err := cli.Get(ctx, f.Store.Keys().Worker("w0")); err != nil {
				t.Fatalf("worker w0 reads its own key: %v", err)
			}
			_, err = cli.Put(ctx, f.Store.Keys().Worker("w1"), "forged")
			return err
		}},
		{"NATS without trusting the fleet CA", func(context.Context) error {
			nc, err := nats.Connect(f.NATS.URL(), nats.UserInfo("controlplane", "guess"))
			if err == nil {
				nc.Close()
			}
			return err
		}},
		{"NATS without credentials", func(context.Context) error {
			cfg := f.ControlPlaneNATS()
			cfg.User, cfg.Password = "", ""
			nc, err := fleetconn.NATS(cfg)
			if err == nil {
				nc.Close()
			}
			return err
		}},
		{"NATS with a wrong password", func(context.Context) error {
			cfg := f.ControlPlaneNATS()
			cfg.Password += "x"
			nc, err := fleetconn.NATS(cfg)
			if err == nil {
				nc.Close()
			}
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := tt.try(ctx)
			if err == nil {
				t.Fatal("served")
			}
			t.Logf("refused: %v", err)
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.Client.Get(ctx, "probe"); err != nil {
		t.Fatalf("the tests' root client: %v", err)
	}
}

// TestNoCredentials: with NoCredentials (and FleetInsecure, the
// benchmarks' "everything off") anyone reaches etcd and NATS in plaintext.
func TestNoCredentials(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w0"}}, NoCredentials: true, FleetInsecure: true})
	if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, map[string]any{}); r.Status != http.StatusCreated {
		t.Fatalf("create session: %d %s", r.Status, r.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := f.Etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, f.Store.Keys().Worker("w1"), "anyone"); err != nil {
		t.Fatalf("anonymous plaintext etcd: %v", err)
	}
	nc, err := nats.Connect(f.NATS.URL())
	if err != nil {
		t.Fatalf("anonymous plaintext NATS: %v", err)
	}
	nc.Close()
}
