package cli

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// certs init and issue write a CA and certificates that the fleet's TLS
// accepts: a control plane's names it, a worker's names its id and hosts.
func TestCertsInitAndIssue(t *testing.T) {
	dir := t.TempDir()
	if r := runCLI(t, nil, nil, "certs", "init", "--dir", dir); r.code != ExitOK {
		t.Fatalf("init: %+v", r)
	}
	if st, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v", st, err)
	}
	if r := runCLI(t, nil, nil, "certs", "init", "--dir", dir); r.code != ExitUsage || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("second init: %+v, want refused", r)
	}
	if r := runCLI(t, nil, nil, "certs", "issue", "--dir", dir, "--controlplane"); r.code != ExitOK {
		t.Fatalf("issue control plane: %+v", r)
	}
	if r := runCLI(t, nil, nil, "certs", "issue", "--dir", dir, "--worker", "gpu-1", "--host", "10.0.0.5", "--host", "gpu-1.internal"); r.code != ExitOK {
		t.Fatalf("issue worker: %+v", r)
	}
	cp, err := fleetpki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "controlplane.crt"), Key: filepath.Join(dir, "controlplane.key")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if uris, _ := cp.URIs(); len(uris) != 1 || uris[0] != fleetpki.ControlPlaneURI {
		t.Errorf("control-plane certificate names %v", uris)
	}
	w, err := fleetpki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "worker-gpu-1.crt"), Key: filepath.Join(dir, "worker-gpu-1.key")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(w.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := fleetpki.RequireURI(leaf, fleetpki.WorkerURI("gpu-1")); err != nil {
		t.Error(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "10.0.0.5", Roots: cp.Roots}); err != nil {
		t.Errorf("worker certificate for 10.0.0.5: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "gpu-1.internal", Roots: cp.Roots}); err != nil {
		t.Errorf("worker certificate for gpu-1.internal: %v", err)
	}
}

func TestCertsUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"certs", "init"}, "--dir"},
		{[]string{"certs", "issue", "--dir", dir, "--controlplane"}, "certs init"},
		{[]string{"certs", "issue", "--dir", dir}, "exactly one"},
		{[]string{"certs", "issue", "--dir", dir, "--controlplane", "--worker", "w"}, "exactly one"},
		{[]string{"certs", "issue", "--dir", dir, "--worker", "a/b"}, "--worker"},
		{[]string{"certs", "bogus"}, "unknown command"},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, nil, tt.args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: %+v, want a usage error naming %q", tt.args, r, tt.want)
		}
	}
}
