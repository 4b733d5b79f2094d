// Package testfleet starts a whole fleet inside a test: an embedded etcd
// cluster, an embedded NATS server with JetStream, control-plane replicas
// and worker agents, all real and talking over loopback. Only the GPUs are
// stand-ins (named "fake-gpu-N"): a worker advertises the devices it is
// given, since no GPU exists on a test machine. Links are secured as in a
// deployment unless an option turns that off: control plane ↔ worker in
// mutual TLS, etcd and NATS over TLS with per-role credentials.
package testfleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/replica"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/supervisor"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/webhooks"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

// API keys every test fleet accepts.
const (
	AdminKey    = "test-admin-key-0123456789"
	SessionsKey = "test-sessions-key-0123456789"
	OtherKey    = "test-other-sessions-key-0123"
)

// WorkerSpec describes one worker to start.
type WorkerSpec struct {
	ID          string
	GPUs        int // fake GPUs; 0 means 1
	SlotsPerGPU int // 0 means 2
	// Signaling is the worker's embedded SFU (WHEP/WHIP); nil leaves the
	// worker without media, answering those calls with Unimplemented.
	// NewPionAnswerer makes a minimal real one.
	Signaling server.Signaling
	// EtcdEndpoints, when set, replace the worker's etcd endpoints (a
	// proxy between it and etcd, to partition it).
	EtcdEndpoints []string
	// LeaseTTL, when set, replaces Options.WorkerLeaseTTL for this worker.
	LeaseTTL time.Duration
	// Avatars, Voices and TTSEngine are advertised in the worker record
	// (none: the default only); Previews serves its avatar previews (nil:
	// none).
	Avatars, Voices []string
	TTSEngine       string
	Previews        server.Previews
}

// Options configures a test fleet.
type Options struct {
	EtcdMembers int // default 1
	Replicas    int // default 1
	Workers     []WorkerSpec
	// WorkerLeaseTTL is each worker's lease (default 2s, so loss is quick).
	WorkerLeaseTTL time.Duration
	// DrainTimeout bounds a worker's drain on graceful stop (default 2s).
	DrainTimeout time.Duration
	Supervisor   supervisor.Options
	// Verbose sends every component's logs to stderr.
	Verbose bool
	// Fsync makes etcd sync its log to disk as in production (benchmarks);
	// tests skip it for speed.
	Fsync bool
	// NATSMaxStore bounds the embedded NATS server's JetStream store, in
	// bytes, as a machine short of disk does by default; 0 leaves NATS'
	// default (75% of the free disk).
	NATSMaxStore int64
	// EtcdSnapshotCount overrides etcd's snapshot trigger (benchmarks).
	EtcdSnapshotCount uint64
	// KeyLimits sets limits of the test keys (by key); the others have none.
	KeyLimits map[string]auth.LimitOverrides
	// TokenKeys are every replica's session-token keys; nil generates one.
	TokenKeys *viewertoken.KeySet
	// FleetInsecure runs the control plane ↔ worker links in plaintext
	// (benchmarks compare it with the default, mutual TLS).
	FleetInsecure bool
	// NoCredentials runs etcd and NATS open and in plaintext. By default
	// both authenticate every client (etcd users and roles, NATS users
	// with per-role permissions) over TLS, as a deployment does; with
	// FleetInsecure it is the benchmarks' "everything off".
	NoCredentials bool
	// Webhooks are endpoints of the test keys, and WebhookOptions the
	// replicas' retry policy for them.
	Webhooks       []Webhook
	WebhookOptions webhooks.Options
}

// Webhook is an endpoint of a test key.
type Webhook struct{ Key, URL, Secret string }

// Fleet is a running test fleet.
type Fleet struct {
	t    testing.TB
	opts Options
	Etcd *embedded.EtcdCluster
	NATS *embedded.NATSServer
	// CA is the fleet CA: replicas and workers talk mutual TLS with
	// certificates it issued, as a deployment does.
	CA *fleetpki.CA
	// Client is an etcd client with every right (root when the fleet runs
	// with credentials), for tests that read or change etcd behind the
	// control plane's back.
	Client *clientv3.Client
	Store  *fleetstore.Store
	// TokenKeys are the replicas' session-token keys (tests sign with them).
	TokenKeys *viewertoken.KeySet
	Replicas  []*replica.Replica
	stops     []func() // stop replica i and wait
	log       *slog.Logger
	creds     *credentials       // nil with NoCredentials
	cpTLS     *fleetpki.Material // nil with FleetInsecure
	enrolled  map[string]bool    // workers with an etcd user (guarded by mu)

	ctx    context.Context
	cancel context.CancelFunc
	// api sends Do's requests. Its limit is far above the control plane's
	// own request timeout: a request that outlives it found a handler
	// that ignores its deadline, and fails instead of hanging the test.
	api      *http.Client
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu      sync.Mutex
	workers map[string]*Worker
	down    map[int]bool // stopped replicas
}

// Worker is a running worker agent.
type Worker struct {
	Agent  *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

// Start starts a fleet and stops it when the test ends.
func Start(t testing.TB, opts Options) *Fleet {
	t.Helper()
	if opts.EtcdMembers == 0 {
		opts.EtcdMembers = 1
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.WorkerLeaseTTL == 0 {
		opts.WorkerLeaseTTL = 2 * time.Second
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 2 * time.Second
	}
	if opts.Supervisor.HealthInterval == 0 {
		opts.Supervisor.HealthInterval = 200 * time.Millisecond
	}
	if opts.Supervisor.ElectionTTL == 0 {
		opts.Supervisor.ElectionTTL = 2 * time.Second
	}
	log := slog.New(slog.DiscardHandler)
	if opts.Verbose || os.Getenv(VerboseEnv) != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f := &Fleet{t: t, opts: opts, log: log, workers: map[string]*Worker{}, down: map[int]bool{},
		api: &http.Client{Timeout: 2 * time.Minute}}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	t.Cleanup(f.stop)

	sctx, scancel := context.WithTimeout(f.ctx, 90*time.Second)
	defer scancel()
	var err error
	if f.CA, err = fleetpki.NewCA("test fleet CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	var etcdTLS *transport.TLSInfo
	natsOpts := embedded.NATSOptions{StoreDir: t.TempDir(), MaxStore: opts.NATSMaxStore}
	if !opts.NoCredentials {
		if f.creds, err = newCredentials(t.TempDir(), f.CA); err != nil {
			t.Fatal(err)
		}
		etcdTLS = f.creds.etcdServerTLS()
		natsOpts.TLS, natsOpts.Auth = f.creds.natsTLS, f.creds.nats.Auth()
	}
	// embedded.StartEtcd picks free ports and then binds them: another
	// test's outgoing connection can take one in between. Try again then.
	for attempt := 1; ; attempt++ {
		f.Etcd, err = embedded.StartEtcd(sctx, embedded.EtcdOptions{Dir: t.TempDir(), Members: opts.EtcdMembers, NoFsync: !opts.Fsync,
			SnapshotCount: opts.EtcdSnapshotCount, KeepFiles: true, ClientTLS: etcdTLS, BcryptCost: testBcryptCost})
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 3 {
			t.Fatalf("start etcd: %v", err)
		}
		f.Etcd = nil
	}
	f.NATS, err = embedded.StartNATS(natsOpts)
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	if f.creds != nil {
		// Every worker known now gets its user before anything connects:
		// etcd invalidates every token issued before a change of users or
		// roles, and a watch (re)created with such a token is cancelled.
		ids := make([]string, 0, len(opts.Workers))
		for _, w := range opts.Workers {
			ids = append(ids, w.ID)
		}
		f.enrolled = map[string]bool{}
		for _, id := range ids {
			f.enrolled[id] = true
		}
		if err := f.creds.etcd.Setup(sctx, f.etcdBase(), fleetstore.NewKeys(""), ids...); err != nil {
			t.Fatalf("etcd authentication: %v", err)
		}
	}
	if f.Client, err = fleetconn.Etcd(f.ctx, f.RootEtcd()); err != nil {
		t.Fatal(err)
	}
	f.Store = fleetstore.New(f.Client, fleetstore.NewKeys(""))
	cpTLS, err := f.CA.Material(fleetpki.Request{ControlPlane: true})
	if err != nil {
		t.Fatal(err)
	}
	if opts.FleetInsecure {
		cpTLS = nil
	}
	f.cpTLS = cpTLS

	keys := &auth.Keys{}
	for _, k := range []struct {
		key    string
		scopes []string
	}{{AdminKey, []string{auth.ScopeAdmin}}, {SessionsKey, []string{auth.ScopeSessions}}, {OtherKey, []string{auth.ScopeSessions}}} {
		if err := keys.AddWithLimits(k.key, opts.KeyLimits[k.key], k.scopes...); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range opts.Webhooks {
		if err := keys.AddWebhook(w.Key, w.URL, w.Secret); err != nil {
			t.Fatal(err)
		}
	}
	f.TokenKeys = opts.TokenKeys
	if f.TokenKeys == nil {
		k, err := viewertoken.GenerateKey(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if f.TokenKeys, err = viewertoken.NewKeySet(k); err != nil {
			t.Fatal(err)
		}
	}
	for i := range opts.Replicas {
		r, err := replica.New(sctx, replica.Options{
			ReplicaID:  fmt.Sprintf("cp%d", i),
			Listen:     "127.0.0.1:0",
			Etcd:       f.ControlPlaneEtcd(),
			NATS:       f.ControlPlaneNATS(),
			Keys:       keys,
			TokenKeys:  f.TokenKeys,
			FleetTLS:   cpTLS,
			Supervisor: opts.Supervisor,
			Webhooks:   opts.WebhookOptions,
			Log:        log,
		})
		if err != nil {
			t.Fatalf("start replica %d: %v", i, err)
		}
		f.Replicas = append(f.Replicas, r)
		rctx, rcancel := context.WithCancel(f.ctx)
		done := make(chan struct{})
		f.stops = append(f.stops, func() { rcancel(); <-done })
		f.wg.Go(func() {
			defer close(done)
			if err := r.Run(rctx); err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		})
	}
	for _, spec := range opts.Workers {
		f.StartWorker(spec)
	}
	return f
}

// VerboseEnv set to anything turns Options.Verbose on for every fleet of
// a test run (go test -run X with AVATARFLEET_TEST_VERBOSE=1 to see why X
// fails without editing it).
const VerboseEnv = "AVATARFLEET_TEST_VERBOSE"

// FakeGPUs returns n stand-in GPU devices with the given slots each.
func FakeGPUs(n, slots int) []*fleetv1.GPU {
	out := make([]*fleetv1.GPU, n)
	for i := range out {
		out[i] = &fleetv1.GPU{Index: uint32(i), Name: fmt.Sprintf("fake-gpu-%d", i), Slots: uint32(slots)}
	}
	return out
}

// StopReplica stops replica i, as a crash of its process would, and waits.
// Its Do calls fail afterwards.
func (f *Fleet) StopReplica(i int) {
	f.stops[i]()
	f.mu.Lock()
	f.down[i] = true
	f.mu.Unlock()
}

// StartWorker starts a worker agent and waits until every replica sees it.
func (f *Fleet) StartWorker(spec WorkerSpec) *Worker {
	f.t.Helper()
	return f.StartWorkerOn(spec, f.NATS.URL())
}

// StartWorkerOn starts a worker whose NATS is natsURL (a worker cut off
// from the fleet's NATS answers no health checks).
func (f *Fleet) StartWorkerOn(spec WorkerSpec, natsURL string) *Worker {
	f.t.Helper()
	if spec.GPUs == 0 {
		spec.GPUs = 1
	}
	if spec.SlotsPerGPU == 0 {
		spec.SlotsPerGPU = 2
	}
	wTLS, err := f.CA.Material(fleetpki.Request{WorkerID: spec.ID, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		f.t.Fatal(err)
	}
	if f.opts.FleetInsecure {
		wTLS = nil
	}
	etcdCfg, natsCfg, err := f.workerLinks(f.ctx, spec.ID, natsURL)
	if err != nil {
		f.t.Fatalf("worker %s: %v", spec.ID, err)
	}
	if len(spec.EtcdEndpoints) > 0 {
		etcdCfg.Endpoints = spec.EtcdEndpoints
	}
	leaseTTL := f.opts.WorkerLeaseTTL
	if spec.LeaseTTL > 0 {
		leaseTTL = spec.LeaseTTL
	}
	a, err := agent.New(agent.Options{
		ID:             spec.ID,
		TLS:            wTLS,
		Etcd:           etcdCfg,
		NATS:           natsCfg,
		GRPCListen:     "127.0.0.1:0",
		Devices:        FakeGPUs(spec.GPUs, spec.SlotsPerGPU),
		LeaseTTL:       leaseTTL,
		DrainTimeout:   f.opts.DrainTimeout,
		Signaling:      spec.Signaling,
		Avatars:        spec.Avatars,
		Voices:         spec.Voices,
		TTSEngine:      spec.TTSEngine,
		AvatarPreviews: spec.Previews,
		NewRuntime: func(devs []*fleetv1.GPU, log *slog.Logger) (runtime.Runtime, error) {
			return runtimetest.NewHolder(devs, log), nil
		},
		Logger: f.log,
	})
	if err != nil {
		f.t.Fatalf("start worker %s: %v", spec.ID, err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	w := &Worker{Agent: a, cancel: cancel, done: make(chan error, 1)}
	f.wg.Go(func() { w.done <- a.Run(ctx) })
	f.mu.Lock()
	f.workers[spec.ID] = w
	f.mu.Unlock()
	f.Eventually(10*time.Second, "replicas see worker "+spec.ID, func() bool {
		for i, r := range f.Replicas {
			if f.stopped(i) {
				continue
			}
			if _, ok := r.Registry().Worker(spec.ID); !ok {
				return false
			}
		}
		return true
	})
	return w
}

func (f *Fleet) stopped(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down[i]
}

// Worker returns a started worker.
func (f *Fleet) Worker(id string) *Worker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.workers[id]
}

// StopWorker stops a worker as SIGTERM does (drain, deregister) and waits.
func (f *Fleet) StopWorker(id string) error {
	w := f.Worker(id)
	w.cancel()
	return <-w.done
}

// KillWorker stops a worker as a crash does: no drain, no deregistration.
func (f *Fleet) KillWorker(id string) error {
	w := f.Worker(id)
	w.Agent.Abort()
	return <-w.done
}

// URL is the base URL of replica i.
func (f *Fleet) URL(i int) string { return f.Replicas[i].URL() }

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test if it cannot.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request to replica i. body may be nil, []byte, or a value
// encoded as JSON (then Content-Type is application/json unless given).
func (f *Fleet) Do(i int, method, path, key string, body any, headers ...string) (Response, error) {
	var rd io.Reader
	isJSON := false
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return Response{}, err
		}
		rd, isJSON = bytes.NewReader(enc), true
	}
	req, err := http.NewRequestWithContext(f.ctx, method, f.URL(i)+path, rd)
	if err != nil {
		return Response{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if isJSON {
		req.Header.Set("Content-Type", "application/json")
	}
	for j := 0; j+1 < len(headers); j += 2 {
		req.Header.Set(headers[j], headers[j+1])
	}
	resp, err := f.api.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// MustDo is Do that fails the test on a transport error.
func (f *Fleet) MustDo(i int, method, path, key string, body any, headers ...string) Response {
	f.t.Helper()
	r, err := f.Do(i, method, path, key, body, headers...)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// Eventually polls cond until it holds or the timeout passes.
func (f *Fleet) Eventually(timeout time.Duration, what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SlotKeys counts the slot keys in etcd, per worker and GPU.
func (f *Fleet) SlotKeys(ctx context.Context) (map[string]map[uint32]int, int, error) {
	resp, err := f.Client.Get(ctx, f.Store.Keys().Slots(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := map[string]map[uint32]int{}
	for _, kv := range resp.Kvs {
		pk, err := f.Store.Keys().Parse(string(kv.Key))
		if err != nil {
			return nil, 0, err
		}
		if out[pk.Worker] == nil {
			out[pk.Worker] = map[uint32]int{}
		}
		out[pk.Worker][pk.GPU]++
	}
	return out, len(resp.Kvs), nil
}

// Stop stops the whole fleet now (benchmarks that start several fleets in
// one run); the test's cleanup then does nothing more.
func (f *Fleet) Stop() { f.stop() }

func (f *Fleet) stop() { f.stopOnce.Do(f.stopNow) }

func (f *Fleet) stopNow() {
	f.cancel()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		f.t.Errorf("fleet did not stop within 30s")
	}
	f.api.CloseIdleConnections()
	if f.Client != nil {
		_ = f.Client.Close()
	}
	if f.NATS != nil {
		f.NATS.Close()
	}
	if f.Etcd != nil {
		f.Etcd.Close()
	}
}
