package fleetpki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func leafOf(t *testing.T, m *Material) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(m.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs a TLS handshake between client and server configs over
// an in-memory pipe and returns the two sides' errors.
func handshake(t *testing.T, client, server *tls.Config, serverName string) (cerr, serr error) {
	t.Helper()
	a, b := pipe(t)
	client = client.Clone()
	client.ServerName = serverName
	done := make(chan error, 1)
	go func() {
		s := tls.Server(b, server)
		err := s.Handshake()
		if err == nil {
			// TLS 1.3: the server verifies the client's certificate after
			// the client's handshake ends; a read surfaces the verdict.
			_, err = s.Write([]byte{1})
		}
		_ = s.Close()
		done <- err
	}()
	c := tls.Client(a, client)
	cerr = c.Handshake()
	if cerr == nil {
		_, cerr = c.Read(make([]byte, 1))
	}
	_ = c.Close()
	return cerr, <-done
}

func TestMutualTLSIdentities(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	issue := func(ca *CA, req Request) *Material {
		m, err := ca.Material(req)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	cp := issue(ca, Request{ControlPlane: true})
	w1 := issue(ca, Request{WorkerID: "w1", Hosts: []string{"127.0.0.1", "w1.internal"}})
	strangerCP := issue(other, Request{ControlPlane: true})
	tests := []struct {
		name       string
		client     *tls.Config
		server     *tls.Config
		serverName string
		wantErr    string // "" = both sides succeed
	}{
		{"control plane to its worker", cp.ControlPlaneClient("w1"), w1.WorkerServer(), "w1.internal", ""},
		{"by IP", cp.ControlPlaneClient("w1"), w1.WorkerServer(), "127.0.0.1", ""},
		{"worker names another id", cp.ControlPlaneClient("w2"), w1.WorkerServer(), "w1.internal", "avatarfleet://worker/w2"},
		{"host not covered", cp.ControlPlaneClient("w1"), w1.WorkerServer(), "w9.internal", "w9.internal"},
		{"control plane of another CA", strangerCP.ControlPlaneClient("w1"), w1.WorkerServer(), "w1.internal", "certificate"},
		{"a worker as client", w1.ControlPlaneClient("w1"), w1.WorkerServer(), "w1.internal", ControlPlaneURI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cerr, serr := handshake(t, tt.client, tt.server, tt.serverName)
			if tt.wantErr == "" {
				if cerr != nil || serr != nil {
					t.Fatalf("client %v, server %v", cerr, serr)
				}
				return
			}
			err := errors.Join(cerr, serr)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestIssueAndFiles(t *testing.T) {
	ca, err := NewCA("long-lived", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(Request{}); err == nil {
		t.Error("a request naming nobody was issued")
	}
	if _, err := ca.Issue(Request{ControlPlane: true, WorkerID: "w"}); err == nil {
		t.Error("a request naming two identities was issued")
	}
	dir := t.TempDir()
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(Request{WorkerID: "w1", Hosts: []string{"10.0.0.5"}, Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := is.WriteFiles(dir, "w1"); err != nil {
		t.Fatal(err)
	}
	for name, perm := range map[string]os.FileMode{"ca.key": 0o600, "w1.key": 0o600, "w1.crt": 0o644} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != perm {
			t.Errorf("%s: %v %v, want mode %o", name, st, err, perm)
		}
	}
	m, err := Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "w1.crt"), Key: filepath.Join(dir, "w1.key")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafOf(t, m)
	if err := RequireURI(leaf, WorkerURI("w1")); err != nil {
		t.Error(err)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got > 49*time.Hour || got < 47*time.Hour {
		t.Errorf("validity %v, want about 48h", got)
	}
	// A certificate never outlives its CA.
	short := mustCA(t)
	sm, err := short.Material(Request{ControlPlane: true, Validity: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if leafOf(t, sm).NotAfter.After(short.Cert.NotAfter) {
		t.Error("certificate outlives its CA")
	}
	back, err := LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil || !back.Cert.Equal(ca.Cert) {
		t.Fatalf("LoadCA: %v", err)
	}
	if _, err := LoadCA(filepath.Join(dir, "w1.crt"), filepath.Join(dir, "w1.key")); err == nil {
		t.Error("a leaf certificate loaded as a CA")
	}
	if err := (Files{CA: "x"}).Validate(); err == nil {
		t.Error("incomplete files validated")
	}
}

func TestDevPKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := DevWorker(dir, "w1", nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("DevWorker without a CA: %v, want ErrNotExist", err)
	}
	files, created, err := EnsureDevControlPlane(dir)
	if err != nil || !created {
		t.Fatalf("first: %v %v", created, err)
	}
	if _, created, err = EnsureDevControlPlane(dir); err != nil || created {
		t.Fatalf("second made a new CA: %v %v", created, err)
	}
	cp, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	w, err := DevWorker(dir, "w1", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if cerr, serr := handshake(t, cp.ControlPlaneClient("w1"), w.WorkerServer(), "127.0.0.1"); cerr != nil || serr != nil {
		t.Fatalf("dev control plane to dev worker: %v %v", cerr, serr)
	}
}
