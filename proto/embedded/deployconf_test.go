package embedded_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/internal/testpki"
)

// TestDeployNATSConfig checks that the documented nats-server configuration
// grants exactly the permissions of ControlPlanePermissions and
// WorkerPermissions, and that a server run from it maps fleet certificates
// to those users.
func TestDeployNATSConfig(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.New(t, "fleet CA")
	srv := ca.Server(t, "nats")
	dir := t.TempDir()
	conf := strings.NewReplacer(
		"/etc/nats/tls/server.pem", srv.CertFile,
		"/etc/nats/tls/server-key.pem", srv.KeyFile,
		"/etc/avatarfleet/fleet-ca.pem", ca.CAFile,
		"/var/lib/nats", filepath.Join(dir, "js"),
		"port: 4222", "port: -1",
	).Replace(string(raw))
	path := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*server.Permissions{
		embedded.ControlPlaneURI:                embedded.ControlPlanePermissions(),
		embedded.WorkerURIPrefix + "gpu-node-1": embedded.WorkerPermissions("gpu-node-1"),
	}
	if len(opts.Users) != len(want) {
		t.Fatalf("config has %d users, want %d", len(opts.Users), len(want))
	}
	for _, u := range opts.Users {
		if !reflect.DeepEqual(u.Permissions, want[u.Username]) {
			t.Errorf("user %s: permissions\n%+v\nwant\n%+v", u.Username, describe(u.Permissions), describe(want[u.Username]))
		}
	}
	if t.Failed() {
		return
	}

	opts.NoLog, opts.NoSigs, opts.Host = true, true, "127.0.0.1"
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	worker := ca.Client(t, "gpu-node-1", embedded.WorkerURIPrefix+"gpu-node-1")
	errs := make(chan error, 4)
	nc, err := fleetconn.NATS(fleetconn.NATSConfig{URL: ns.ClientURL(), InboxPrefix: fleetbus.WorkerInboxPrefix("gpu-node-1"),
		TLS: fleetconn.TLSFiles{CAFile: ca.CAFile, CertFile: worker.CertFile, KeyFile: worker.KeyFile}},
		nats.NoReconnect(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("worker certificate refused: %v", err)
	}
	defer nc.Close()
	subject := fleetbus.WorkerSessionSubject("gpu-node-2", "s1")
	if err := nc.Publish(subject, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	waitPermissionError(t, errs, subject)
	if nc2, err := fleetconn.NATS(fleetconn.NATSConfig{URL: ns.ClientURL(), TLS: fleetconn.TLSFiles{CAFile: ca.CAFile}}, nats.NoReconnect()); err == nil {
		nc2.Close()
		t.Fatal("client without a certificate connected")
	}
}

func describe(p *server.Permissions) string {
	if p == nil {
		return "<nil>"
	}
	var b strings.Builder
	if p.Publish != nil {
		b.WriteString("publish " + strings.Join(p.Publish.Allow, ",") + "; ")
	}
	if p.Subscribe != nil {
		b.WriteString("subscribe " + strings.Join(p.Subscribe.Allow, ",") + "; ")
	}
	if p.Response != nil {
		b.WriteString("responses " + p.Response.Expires.String())
	}
	return b.String()
}
