// Package agent is a whole worker: it connects to etcd and NATS, registers
// the worker under its lease, serves WorkerService over gRPC, answers health
// checks, follows its slot keys, reports sessions that end on their own, and
// drains on shutdown. It owns every goroutine it starts; Run returns only
// after they have all ended. bin/worker is a thin flag layer over it, and
// control-plane tests start several agents in one process.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

// Defaults of Options.
const (
	// DefaultGRPCListen is loopback: on a multi-node fleet the operator
	// binds the worker's private address (and the fleet TLS guards it).
	DefaultGRPCListen   = "127.0.0.1:9090"
	DefaultMediaPort    = 50000
	DefaultLeaseTTL     = 5 * time.Second
	DefaultDrainTimeout = 60 * time.Second
	DefaultVersion      = "dev"
	MinLeaseTTL         = time.Second
	MaxLeaseTTL         = 60 * time.Second
	// DefaultCPUSlots matches devices.DefaultCPUSlots; the agent does not
	// import package devices so that importing the agent (control-plane
	// tests do) does not pull in the cgo NVML binding.
	DefaultCPUSlots = 2
)

// ErrAborted is returned by Run after Abort.
var ErrAborted = errors.New("worker aborted")

// Options configure an Agent. Only ID, etcd endpoints and a NATS URL are
// required; zero values take the defaults named on each field.
type Options struct {
	// ID names the worker (fleetstore.ValidName).
	ID string
	// EtcdEndpoints are the etcd client URLs of an etcd without TLS or
	// credentials; Etcd, when its endpoints are set, replaces them.
	EtcdEndpoints []string
	Etcd          fleetconn.EtcdConfig
	// EtcdPrefix is the fleet's key prefix ("" → fleetstore.DefaultPrefix).
	EtcdPrefix string
	// NATSURL is the NATS server URL (comma-separated for several); NATS,
	// when its URL is set, replaces it with full connection settings.
	NATSURL string
	NATS    fleetconn.NATSConfig
	// TLS is the worker's fleet certificate and CA: WorkerService then
	// accepts only clients whose certificate chains to the fleet CA and
	// names a control plane (fleetpki). Nil serves plaintext (a fleet that
	// runs without fleet TLS).
	TLS *fleetpki.Material
	// GRPCListen is the WorkerService listen address ("" →
	// DefaultGRPCListen; tests use "127.0.0.1:0" and read GRPCAddr).
	GRPCListen string
	// AdvertiseAddress is the host:port the control plane dials ("" →
	// derived from the bound address: an unspecified host becomes
	// 127.0.0.1; PublicIP is never used for it).
	AdvertiseAddress string
	// PublicIP is the address ICE candidates (and the media address) show.
	PublicIP string
	// MediaPort is the one UDP port of all WebRTC media (0 → 50000).
	MediaPort int
	// Devices are the devices to advertise (devices.Resolve); nil → the CPU
	// device with its default slots.
	Devices []*fleetv1.GPU
	// LeaseTTL is the worker lease TTL, 1s..60s, rounded up to whole seconds
	// (0 → 5s). A dead worker's slots are freed within about this long.
	LeaseTTL time.Duration
	// DrainTimeout is how long a drain waits for sessions to end on their
	// own before ending them with reason drained (0: no wait).
	DrainTimeout time.Duration
	// NoDrainMigration keeps sessions on a draining worker until they end
	// (or the deadline) instead of asking the control plane to migrate
	// them to workers with free slots (Worker.migrate).
	NoDrainMigration bool
	// Version is the build version in the worker record and health reports.
	Version string
	// ModelPath and AvatarsPath are carried for the media pipeline.
	ModelPath, AvatarsPath string
	// Signaling is the embedded SFU serving WHEP/WHIP (nil: the worker
	// answers those calls with Unimplemented).
	Signaling server.Signaling
	// NewRuntime builds the session runtime (required). The worker binary
	// builds the media runtime (package mediaruntime) here; tests use
	// runtimetest.Holder.
	NewRuntime func(devs []*fleetv1.GPU, log *slog.Logger) (runtime.Runtime, error)
	// Avatars and Voices are advertised in the worker record: the avatar
	// and voice names this worker can serve.
	Avatars, Voices []string
	// TTSEngine names the engine behind Voices in the worker record ("":
	// unknown).
	TTSEngine string
	// RecordingStore is the shared recording store in the worker record
	// (recording.Store.Shared; "" for none or a directory of its own).
	RecordingStore string
	// AvatarPreviews serves the control plane's avatar previews (nil:
	// none, AvatarPreview answers NotFound).
	AvatarPreviews server.Previews
	// MetricsListen is the address of the Prometheus /metrics endpoint
	// ("" → none; tests use "127.0.0.1:0" and read MetricsAddr).
	MetricsListen string
	// Collectors are extra Prometheus collectors served on /metrics (the
	// embedded SFU's). The runtime is served too when it is a
	// prometheus.Collector.
	Collectors []prometheus.Collector
	// Logger receives the worker's logs (nil → discarded).
	Logger *slog.Logger
}

// Agent is one worker. Create it with New, then call Run once.
type Agent struct {
	opts      Options
	log       *slog.Logger
	lis       net.Listener
	advertise string
	media     string
	rt        runtime.Runtime
	metrics   *metricsServer // nil when disabled

	registered chan struct{} // closed once the first registration is written
	// aborted ends when Abort is called; a context so that it can cut
	// short calls in flight (context.AfterFunc).
	aborted context.Context
	abort   context.CancelFunc
	runOnce sync.Once
}

// New validates opts, builds the runtime and binds the gRPC listener, so
// GRPCAddr is known before Run. If Run is never called, call Close.
func New(opts Options) (*Agent, error) {
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	log := opts.Logger.With("worker", opts.ID)
	rt, err := opts.NewRuntime(opts.Devices, log.With("component", "runtime"))
	if err != nil {
		return nil, fmt.Errorf("agent: session runtime: %w", err)
	}
	lis, err := net.Listen("tcp", opts.GRPCListen)
	if err != nil {
		_ = rt.Close(context.Background())
		return nil, fmt.Errorf("agent: listen for gRPC on %s: %w", opts.GRPCListen, err)
	}
	ms, err := newMetricsServer(opts.MetricsListen, rt, opts.Collectors)
	if err != nil {
		_ = lis.Close()
		_ = rt.Close(context.Background())
		return nil, err
	}
	advertise := opts.AdvertiseAddress
	if advertise == "" {
		advertise = deriveAdvertise(opts.GRPCListen, lis.Addr())
	}
	mediaHost := opts.PublicIP
	if mediaHost == "" {
		mediaHost, _, _ = net.SplitHostPort(advertise)
	}
	aborted, abort := context.WithCancel(context.Background())
	return &Agent{
		opts:       opts,
		log:        log,
		lis:        lis,
		advertise:  advertise,
		media:      net.JoinHostPort(mediaHost, strconv.Itoa(opts.MediaPort)),
		rt:         rt,
		metrics:    ms,
		registered: make(chan struct{}),
		aborted:    aborted,
		abort:      abort,
	}, nil
}

func applyDefaults(o *Options) error {
	if !fleetstore.ValidName(o.ID) {
		return fmt.Errorf("agent: worker id %q: want 1..64 characters of [a-zA-Z0-9_.-], starting with a letter or digit", o.ID)
	}
	if len(o.Etcd.Endpoints) == 0 {
		o.Etcd.Endpoints = o.EtcdEndpoints
	}
	if len(o.Etcd.Endpoints) == 0 {
		return errors.New("agent: no etcd endpoints")
	}
	if err := o.Etcd.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	o.EtcdEndpoints = o.Etcd.Endpoints
	if o.NATS.URL == "" {
		o.NATS.URL = o.NATSURL
	}
	if o.NATS.URL == "" {
		return errors.New("agent: no NATS URL")
	}
	if o.NATS.Name == "" {
		o.NATS.Name = "avatarfleet-worker/" + o.ID
	}
	if err := o.NATS.Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	o.NATSURL = o.NATS.URL
	if o.GRPCListen == "" {
		o.GRPCListen = DefaultGRPCListen
	}
	if o.AdvertiseAddress != "" {
		if _, _, err := net.SplitHostPort(o.AdvertiseAddress); err != nil {
			return fmt.Errorf("agent: advertise address %q: want host:port: %w", o.AdvertiseAddress, err)
		}
	}
	if o.PublicIP != "" && net.ParseIP(o.PublicIP) == nil {
		return fmt.Errorf("agent: public IP %q is not an IP address", o.PublicIP)
	}
	if o.MediaPort == 0 {
		o.MediaPort = DefaultMediaPort
	}
	if o.MediaPort < 1 || o.MediaPort > 65535 {
		return fmt.Errorf("agent: media port %d: want 1..65535", o.MediaPort)
	}
	if len(o.Devices) == 0 {
		o.Devices = []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: DefaultCPUSlots, Cpu: true}}
	}
	for _, d := range o.Devices {
		if d.GetSlots() == 0 {
			return fmt.Errorf("agent: device %d has no slots", d.GetIndex())
		}
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LeaseTTL < MinLeaseTTL || o.LeaseTTL > MaxLeaseTTL {
		return fmt.Errorf("agent: lease TTL %s: want %s..%s", o.LeaseTTL, MinLeaseTTL, MaxLeaseTTL)
	}
	o.LeaseTTL = (o.LeaseTTL + time.Second - 1).Truncate(time.Second)
	if o.DrainTimeout < 0 {
		return fmt.Errorf("agent: drain timeout %s is negative", o.DrainTimeout)
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if o.NewRuntime == nil {
		return errors.New("agent: no session runtime (NewRuntime)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// deriveAdvertise turns the listen address into one the control plane can
// dial: the bound port (the listen port may be 0) and, for a wildcard host,
// loopback. The public (ICE) address is never advertised for gRPC: a
// worker reachable elsewhere says so with an advertise address.
func deriveAdvertise(listen string, bound net.Addr) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	port := "0"
	if tcp, ok := bound.(*net.TCPAddr); ok {
		port = strconv.Itoa(tcp.Port)
	} else if _, p, err := net.SplitHostPort(bound.String()); err == nil {
		port = p
	}
	return net.JoinHostPort(host, port)
}

// ID is the worker id.
func (a *Agent) ID() string { return a.opts.ID }

// GRPCAddr is the address the gRPC listener is bound to (with the real port
// when the listen port was 0).
func (a *Agent) GRPCAddr() string { return a.lis.Addr().String() }

// MetricsAddr is the address /metrics is served on ("" when disabled).
func (a *Agent) MetricsAddr() string {
	if a.metrics == nil {
		return ""
	}
	return a.metrics.lis.Addr().String()
}

// AdvertiseAddress is the gRPC address written in the worker record.
func (a *Agent) AdvertiseAddress() string { return a.advertise }

// MediaAddress is the media address written in the worker record.
func (a *Agent) MediaAddress() string { return a.media }

// Devices are the devices the worker advertises.
func (a *Agent) Devices() []*fleetv1.GPU { return a.opts.Devices }

// Runtime is the session runtime Options.NewRuntime built; tests use it to
// end sessions on the worker's own initiative.
func (a *Agent) Runtime() runtime.Runtime { return a.rt }

// Registered closes once the worker record is first written to etcd.
func (a *Agent) Registered() <-chan struct{} { return a.registered }

// Abort stops the worker as a crash would: no drain, no deregistration (the
// lease expires on its own and the control plane reports the sessions
// lost), gRPC and health stop at once. Run then returns ErrAborted.
func (a *Agent) Abort() { a.abort() }

// Close releases what New took, for an Agent whose Run is never called.
func (a *Agent) Close() error {
	var err error
	a.runOnce.Do(func() {
		a.abort()
		err = errors.Join(a.lis.Close(), a.closeMetrics(), a.rt.Close(context.Background()))
	})
	return err
}

func (a *Agent) closeMetrics() error {
	if a.metrics == nil {
		return nil
	}
	return a.metrics.close()
}
