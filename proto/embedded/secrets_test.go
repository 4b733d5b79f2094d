package embedded_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
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
