//go:build linux

package binfleet

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Replica is a further control-plane replica (StartReplica).
type Replica struct {
	// URL is its base URL (http://127.0.0.1:port).
	URL  string
	Proc *Proc
}

// StartReplica starts one more bin/controlplane, named id, on the first
// one's embedded etcd and NATS (as a deployment's second replica: --etcd
// and --nats with the control plane's credentials, which the embedded
// default keeps in its data dir, the fleet's certificate, API key and
// session-token keys), with env added to its environment, and waits until
// it is ready. Killing the first control plane kills etcd and NATS with
// it; kill this one to test a replica's crash.
func (f *Fleet) StartReplica(t testing.TB, id string, env []string) *Replica {
	t.Helper()
	if !fleetstore.ValidName(id) {
		t.Fatalf("replica id %q: want a name of [a-zA-Z0-9_-]", id)
	}
	secrets := embedded.DevSecretsDir(filepath.Join(f.dir, "controlplane"))
	r := &Replica{}
	start := func() *Proc {
		port := FreePort(t, "tcp")
		r.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
		args := append([]string{
			"--listen", fmt.Sprintf("127.0.0.1:%d", port),
			"--replica-id", id,
			"--data-dir", filepath.Join(f.dir, id),
			"--etcd", fmt.Sprintf("http://127.0.0.1:%d", f.etcdPort),
			"--nats", fmt.Sprintf("nats://127.0.0.1:%d", f.natsPort),
			"--etcd-username", fleetstore.ControlPlaneUser,
			"--etcd-password-file", filepath.Join(secrets, "etcd-controlplane-password"),
			"--nats-user", embedded.ControlPlaneUser,
			"--nats-password-file", filepath.Join(secrets, "nats-controlplane-password"),
			"--token-keys-file", filepath.Join(f.dir, "controlplane", "token-keys.yaml"),
		}, f.cpTLS...)
		return StartProc(t, id, f.root, f.cpBin, args, append([]string{"AVATARFLEET_API_KEY=" + f.APIKey}, env...))
	}
	r.Proc = start()
	serveOnFreePorts(t, "control plane "+id+" /readyz", 60*time.Second, &r.Proc, start, func() error {
		return APIGet(context.Background(), r.URL, "", "/readyz", nil)
	}, f.procs())
	return r
}
