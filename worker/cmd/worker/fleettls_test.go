package main

import (
	"bytes"
	"crypto/x509"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// devDataDir is a data dir holding the development PKI, as the embedded
// control plane of `make run` leaves it.
func devDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := fleetpki.EnsureDevControlPlane(fleetpki.DevDir(dir)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Without fleet certificates, a development CA or --fleet-insecure the
// worker refuses to start, before loading anything.
func TestRunRefusesWithoutFleetTLS(t *testing.T) {
	var out bytes.Buffer
	args := []string{"--gpus", "cpu", "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", t.TempDir()}
	if code := run(args, env(nil), &out, nil); code != 2 {
		t.Fatalf("exit %d, want 2; output:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "--fleet-insecure") || !strings.Contains(out.String(), "--fleet-ca") {
		t.Fatalf("the error does not say what to set: %q", out.String())
	}
}

// The worker issues itself a development certificate naming its id and
// the hosts it is dialled at.
func TestDevFleetTLS(t *testing.T) {
	c, err := parseConfig([]string{"--id", "w-dev", "--data-dir", devDataDir(t), "--advertise-address", "10.1.2.3:9090"}, env(nil), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.fleetTLS(slog.New(slog.DiscardHandler))
	if err != nil || m == nil {
		t.Fatalf("fleetTLS: %v %v", m, err)
	}
	uris, _ := m.URIs()
	if !slices.Equal(uris, []string{fleetpki.WorkerURI("w-dev")}) {
		t.Errorf("certificate names %v", uris)
	}
	leaf, err := x509.ParseCertificate(m.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"10.1.2.3", "127.0.0.1", "localhost"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not cover %s: %v", h, err)
		}
	}
}

// A worker given another worker's certificate refuses to start.
func TestFleetCertOfAnotherWorker(t *testing.T) {
	dir := t.TempDir()
	ca, err := fleetpki.NewCA("t", time.Hour)
	if err != nil || ca.WriteFiles(dir) != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w1", "w2"} {
		is, err := ca.Issue(fleetpki.Request{WorkerID: id, Hosts: []string{"127.0.0.1"}})
		if err != nil || is.WriteFiles(dir, id) != nil {
			t.Fatal(err)
		}
	}
	args := func(id, cert string) []string {
		return []string{"--id", id, "--fleet-ca", filepath.Join(dir, "ca.crt"), "--fleet-cert", filepath.Join(dir, cert+".crt"), "--fleet-key", filepath.Join(dir, cert+".key")}
	}
	log := slog.New(slog.DiscardHandler)
	c, err := parseConfig(args("w1", "w1"), env(nil), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := c.fleetTLS(log); err != nil || m == nil {
		t.Fatalf("own certificate: %v %v", m, err)
	}
	if c, err = parseConfig(args("w1", "w2"), env(nil), host("n"), io.Discard); err != nil {
		t.Fatal(err)
	}
	var ue usageError
	if _, err := c.fleetTLS(log); !errors.As(err, &ue) || !strings.Contains(err.Error(), fleetpki.WorkerURI("w1")) {
		t.Fatalf("w2's certificate for w1: %v, want a usage error naming %s", err, fleetpki.WorkerURI("w1"))
	}
}

func TestHelpListsFlags(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseConfig([]string{"--help"}, env(nil), host("n"), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{"AVATARFLEET_", "-fleet-ca", "-fleet-insecure", "-data-dir", "-etcd-ca", "-nats-user", "-log-format", "-grpc-listen"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestParseConfigLinks(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig([]string{"--etcd", "127.0.0.1:2379", "--etcd-username", "worker", "--etcd-password-file", pw, "--nats-user", "w"},
		env(map[string]string{"AVATARFLEET_NATS_PASSWORD": "np"}), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if e := c.opts.Etcd; !slices.Equal(e.Endpoints, []string{"http://127.0.0.1:2379"}) || e.Username != "worker" || e.Password != "s3cret" {
		t.Errorf("etcd config %+v", e)
	}
	if n := c.opts.NATS; n.User != "w" || n.Password != "np" || n.URL != "nats://127.0.0.1:4222" {
		t.Errorf("NATS config %+v", n)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--etcd-password-file", pw}, nil, "--etcd-username"},
		{nil, map[string]string{"AVATARFLEET_ETCD_PASSWORD": "x"}, "--etcd-username"},
		{[]string{"--etcd-username", "u", "--etcd-password-file", pw}, map[string]string{"AVATARFLEET_ETCD_PASSWORD": "x"}, "choose one"},
		{[]string{"--nats-creds", pw, "--nats-user", "u"}, nil, "choose one"},
		{[]string{"--fleet-cert", pw}, nil, "--fleet-ca, --fleet-cert and --fleet-key"},
	} {
		_, err := parseConfig(tt.args, env(tt.env), host("n"), io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v %v: err %v, want a usage error naming %q", tt.args, tt.env, err, tt.want)
		}
	}
}
