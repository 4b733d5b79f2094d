//go:build linux

package binfleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// WorkerSpec describes one bin/worker to start.
type WorkerSpec struct {
	// ID is the worker's --id (default "binfleet-worker-N").
	ID string
	// SlotsPerGPU is --slots-per-gpu (default 1).
	SlotsPerGPU int
	// Args are more flags, after the ones Start sets (so they win), e.g.
	// {"--prewarm", "0"}.
	Args []string
	// Env is more environment (KEY=value), e.g. credentials the worker
	// reads from its environment; AVATARFLEET_* of the test's own
	// environment is never passed on.
	Env []string
}

// Options configures a fleet.
type Options struct {
	// APIKey is the control plane's AVATARFLEET_API_KEY (default: random).
	APIKey string
	// Workers to start, each on the CPU (`--gpus cpu`); default one.
	Workers []WorkerSpec
	// ControlPlaneArgs are more control-plane flags.
	ControlPlaneArgs []string
	// ReadyTimeout bounds the wait for each worker to register (default
	// 90 s: a worker under -race loads its model slowly).
	ReadyTimeout time.Duration
}

// Fleet is a started control plane and its workers.
type Fleet struct {
	// URL is the control plane's base URL (http://127.0.0.1:port).
	URL string
	// APIKey has every scope.
	APIKey string
	// PKIDir holds the fleet CA (ca.crt, ca.key) and every party's
	// certificate and key (controlplane.*, worker-<id>.*).
	PKIDir string
	// WorkerIDs are the started workers' ids, in Options order.
	WorkerIDs []string
	// ControlPlane and Workers are the processes.
	ControlPlane *Proc
	Workers      []*Proc

	// root, workerBin and workerArgs restart a worker as it was started.
	root, workerBin string
	workerArgs      [][]string
	workerEnv       [][]string
	workerStart     []func() *Proc

	// cpBin, dir, cpTLS, etcdPort and natsPort start more control-plane
	// replicas on the first one's embedded etcd and NATS (StartReplica).
	cpBin, dir         string
	cpTLS              []string
	etcdPort, natsPort int
}

// Start starts bin/controlplane (embedded etcd and NATS, on free ports) and
// the workers (each on the CPU, with its own gRPC, media and metrics ports,
// advertising 127.0.0.1), and waits until every worker is active.
// t.Cleanup stops them all (see Stop) and logs their output's tails when
// the test failed.
func Start(t testing.TB, opts Options) *Fleet {
	t.Helper()
	root := RepoRoot(t)
	cpBin := BuiltBinary(t, root, "controlplane")
	workerBin := BuiltBinary(t, root, "worker")
	if opts.APIKey == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		opts.APIKey = "binfleet-" + hex.EncodeToString(b)
	}
	if len(opts.Workers) == 0 {
		opts.Workers = []WorkerSpec{{}}
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	dir := t.TempDir()
	var httpPort, etcdPort, natsPort int
	f := &Fleet{APIKey: opts.APIKey, PKIDir: filepath.Join(dir, "pki"), root: root, workerBin: workerBin}
	// A fleet CA and certificates as a deployment makes them (avatarctl
	// certs): the binaries run with mutual TLS on their worker links.
	ca, err := fleetpki.NewCA("binfleet CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(f.PKIDir); err != nil {
		t.Fatal(err)
	}
	issue := func(req fleetpki.Request, name string) []string {
		is, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := is.WriteFiles(f.PKIDir, name); err != nil {
			t.Fatal(err)
		}
		return []string{"--fleet-ca", filepath.Join(f.PKIDir, "ca.crt"),
			"--fleet-cert", filepath.Join(f.PKIDir, name+".crt"), "--fleet-key", filepath.Join(f.PKIDir, name+".key")}
	}

	cpTLS := issue(fleetpki.Request{ControlPlane: true}, "controlplane")
	startControlPlane := func() *Proc {
		httpPort, etcdPort, natsPort = FreePort(t, "tcp"), FreePort(t, "tcp"), FreePort(t, "tcp")
		f.URL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
		return StartProc(t, "controlplane", root, cpBin, append(append([]string{
			"--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
			"--data-dir", filepath.Join(dir, "controlplane"),
			"--embedded-etcd-listen", fmt.Sprintf("127.0.0.1:%d", etcdPort),
			"--embedded-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		}, cpTLS...), opts.ControlPlaneArgs...), []string{"AVATARFLEET_API_KEY=" + opts.APIKey})
	}
	f.ControlPlane = startControlPlane()
	serveOnFreePorts(t, "control plane /readyz", 60*time.Second, &f.ControlPlane, startControlPlane, func() error {
		return APIGet(context.Background(), f.URL, "", "/readyz", nil)
	}, nil)
	f.cpBin, f.dir, f.cpTLS, f.etcdPort, f.natsPort = cpBin, dir, cpTLS, etcdPort, natsPort

	for i, spec := range opts.Workers {
		id := spec.ID
		if id == "" {
			id = fmt.Sprintf("binfleet-worker-%d", i)
		}
		slots := spec.SlotsPerGPU
		if slots == 0 {
			slots = 1
		}
		workerTLS := issue(fleetpki.Request{WorkerID: id, Hosts: []string{"127.0.0.1", "localhost"}}, "worker-"+id)
		i := len(f.Workers)
		start := func() *Proc {
			args := append([]string{
				"--id", id,
				"--etcd", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
				"--nats", fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
				"--grpc-listen", fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")),
				"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", FreePort(t, "tcp")),
				"--media-port", strconv.Itoa(FreePort(t, "udp")),
				"--public-ip", "127.0.0.1",
				"--gpus", "cpu",
				"--slots-per-gpu", strconv.Itoa(slots),
				"--drain-timeout", "5s",
				// The control plane's data dir: its embedded etcd and NATS take
				// only the credentials it keeps there (the development path
				// of `make run`; each worker gets its own etcd user and role).
				"--data-dir", filepath.Join(dir, "controlplane"),
			}, workerTLS...)
			args = append(args, spec.Args...)
			f.workerArgs[i] = args
			return StartProc(t, id, root, workerBin, args, spec.Env)
		}
		f.workerArgs = append(f.workerArgs, nil)
		f.workerEnv = append(f.workerEnv, spec.Env)
		f.Workers = append(f.Workers, nil)
		f.Workers[i] = start()
		f.WorkerIDs = append(f.WorkerIDs, id)
		f.workerStart = append(f.workerStart, start)
	}
	for i, id := range f.WorkerIDs {
		others := append([]*Proc{f.ControlPlane}, f.Workers[:i]...)
		serveOnFreePorts(t, "worker "+id+" registered and active", opts.ReadyTimeout, &f.Workers[i], f.workerStart[i],
			func() error { return f.workerActive(id) }, append(others, f.Workers[i+1:]...))
	}
	return f
}

// workerActive is nil when the API lists the worker as active.
func (f *Fleet) workerActive(id string) error {
	var w apiv1.Worker
	if err := APIGet(context.Background(), f.URL, f.APIKey, "/v1/workers/"+id, &w); err != nil {
		return err
	}
	if w.State != apiv1.WorkerActive {
		return fmt.Errorf("worker %s is %s", id, w.State)
	}
	return nil
}

// WorkerMetricsURL is worker i's /metrics URL (its --metrics-listen, as
// started last).
func (f *Fleet) WorkerMetricsURL(i int) string {
	args := f.workerArgs[i]
	for j, a := range args[:len(args)-1] {
		if a == "--metrics-listen" {
			return "http://" + args[j+1] + "/metrics"
		}
	}
	return ""
}

func (f *Fleet) procs() []*Proc { return append([]*Proc{f.ControlPlane}, f.Workers...) }

// Stop stops the workers (SIGTERM: they drain), then the control plane,
// each with Proc.Stop's SIGKILL fallback. t.Cleanup calls it too; a
// second call does nothing.
func (f *Fleet) Stop() error {
	var first error
	for i := len(f.Workers) - 1; i >= 0; i-- {
		if err := f.Workers[i].Stop(); err != nil && first == nil {
			first = err
		}
	}
	if err := f.ControlPlane.Stop(); err != nil && first == nil {
		first = err
	}
	return first
}

// WaitUntil is the package's WaitUntil, failing early when any process of
// the fleet dies.
func (f *Fleet) WaitUntil(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	WaitUntil(t, what, timeout, f.procs(), check)
}

// Alive is an error when a process of the fleet has exited.
func (f *Fleet) Alive() error {
	for _, p := range f.procs() {
		if err := p.Exited(); err != nil {
			return err
		}
	}
	return nil
}
