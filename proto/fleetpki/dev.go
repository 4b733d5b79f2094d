package fleetpki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The development PKI lives in one directory (<data-dir>/pki): the CA as
// ca.crt and ca.key and the control plane's certificate as
// controlplane.crt and controlplane.key. The embedded single-machine fleet
// makes it on first start; a worker sharing the data dir issues itself a
// certificate from the CA key there. Holding the CA key on every machine
// is what makes it development-only: a deployment issues certificates
// with its own CA and hands each party only its own key.

// DevDir is the development PKI's directory inside a data dir.
func DevDir(dataDir string) string { return filepath.Join(dataDir, "pki") }

// DevFiles names a party's files in the development PKI directory.
func DevFiles(dir, name string) Files {
	return Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
}

// EnsureDevControlPlane makes the development CA and a control-plane
// certificate (for localhost and 127.0.0.1) in dir unless they exist, and
// returns the control plane's files. created reports whether a new CA was
// made.
func EnsureDevControlPlane(dir string) (files Files, created bool, err error) {
	ca, created, err := ensureDevCA(dir)
	if err != nil {
		return Files{}, false, err
	}
	files = DevFiles(dir, "controlplane")
	if _, err := os.Stat(files.Cert); err == nil && !created {
		return files, false, nil
	}
	is, err := ca.Issue(Request{ControlPlane: true, Hosts: []string{"localhost", "127.0.0.1", "::1"}})
	if err != nil {
		return Files{}, false, err
	}
	if err := is.WriteFiles(dir, "controlplane"); err != nil {
		return Files{}, false, err
	}
	return files, created, nil
}

func ensureDevCA(dir string) (*CA, bool, error) {
	crt, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	ca, err := LoadCA(crt, key)
	if err == nil {
		return ca, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("development CA in %s: %w", dir, err)
	}
	if ca, err = NewCA("AvatarFleet development CA", 0); err != nil {
		return nil, false, err
	}
	if err := ca.WriteFiles(dir); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// DevWorker issues worker id a certificate for hosts from the development
// CA in dir, in memory. It fails with an error wrapping fs.ErrNotExist
// when dir holds no CA.
func DevWorker(dir, id string, hosts []string) (*Material, error) {
	ca, err := LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, fmt.Errorf("development CA in %s: %w", dir, err)
	}
	is, err := ca.Issue(Request{WorkerID: id, Hosts: hosts})
	if err != nil {
		return nil, err
	}
	return NewMaterial(ca, is)
}

// Material issues a certificate for req and returns it as material that
// trusts ca (test fleets and benchmarks use it to run with mutual TLS).
func (ca *CA) Material(req Request) (*Material, error) {
	is, err := ca.Issue(req)
	if err != nil {
		return nil, err
	}
	return NewMaterial(ca, is)
}
