// Command worker runs one AvatarFleet GPU worker: it registers the node's
// devices and slots in etcd under a lease, serves WorkerService over gRPC
// for the control plane, answers health checks over NATS, and drains on
// SIGTERM or SIGINT (a second signal exits at once).
//
// Exit codes: 0 after a clean drain, 1 when the worker fails or is killed
// by a second signal, 2 for bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
	"github.com/avatarfleet/avatarfleet/worker/pkg/devices"
)

// version is the build version, set with -ldflags "-X main.version=…".
var version = agent.DefaultVersion

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr, os.Exit))
}

// run is the whole program; exit is called only for a second signal.
func run(args []string, getenv func(string) string, stderr io.Writer, exit func(int)) int {
	cfg, err := parseConfig(args, getenv, os.Hostname, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 2
	}
	log := cfg.logger(stderr)
	if cfg.media.memoryLimit > 0 {
		// A soft limit: the GC works harder near it, and the media
		// runtime sheds its greediest session before the kernel's OOM
		// killer would take the whole worker.
		debug.SetMemoryLimit(cfg.media.memoryLimit)
		log.Info("memory limit", "bytes", cfg.media.memoryLimit)
	}
	fleetTLS, err := cfg.fleetTLS(log)
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return exitCode(err)
	}

	// Signals are caught before anything starts, so an early SIGTERM still
	// drains instead of killing the process.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, requestDrain := context.WithCancel(context.Background())
	defer requestDrain()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case sig := <-sigs:
			log.Info("signal received; draining (send it again to exit at once)", "signal", sig.String())
			requestDrain()
		case <-finished:
			return
		}
		select {
		case sig := <-sigs:
			log.Warn("second signal; exiting at once", "signal", sig.String())
			exit(1)
		case <-finished:
		}
	}()

	if err := cfg.devCredentials(ctx, log); err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 1
	}
	devs, err := cfg.resolveDevices(ctx, loggedDiscovery{devices.NVML{}, log})
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 2
	}
	eng, err := openEngine(ctx, cfg.media, log.With("component", "media"))
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return exitCode(err)
	}
	defer func() {
		if err := eng.close(); err != nil {
			log.Warn("close ONNX Runtime", "err", err)
		}
	}()
	if cfg.auto {
		if err := eng.measureSlots(ctx, devs, log.With("component", "capacity")); err != nil {
			fmt.Fprintf(stderr, "worker: %v\n", err)
			return 1
		}
	}
	opts := cfg.opts
	opts.TLS = fleetTLS
	opts.Devices = devs
	opts.Version = version
	opts.Logger = log
	opts.NewRuntime = eng.newRuntime
	opts.Avatars = eng.avatars.Names()
	opts.Voices = eng.voices()
	opts.TTSEngine = cfg.media.tts
	opts.RecordingStore = cfg.media.recording.shared()
	if opts.AvatarPreviews, err = eng.avatarPreviews(); err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 1
	}
	closeSFU, err := attachSFU(&opts, cfg.sfu, eng, log.With("component", "sfu"))
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 1
	}
	defer func() {
		if err := closeSFU(); err != nil {
			log.Warn("close SFU", "err", err)
		}
	}()
	a, err := agent.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "worker: %v\n", err)
		return 2
	}
	for _, d := range devs {
		log.Info("device", "index", d.GetIndex(), "name", d.GetName(), "memory_bytes", d.GetMemoryBytes(), "slots", d.GetSlots(), "cpu", d.GetCpu())
	}
	log.Info("worker starting", "id", opts.ID, "grpc", a.GRPCAddr(), "advertise", a.AdvertiseAddress(),
		"etcd", opts.EtcdEndpoints, "nats", opts.NATSURL, "metrics", a.MetricsAddr(), "fleet_tls", fleetTLS != nil, "version", version)
	if h, _, _ := net.SplitHostPort(opts.GRPCListen); h == "" || net.ParseIP(h) != nil && net.ParseIP(h).IsUnspecified() {
		if opts.AdvertiseAddress == "" {
			log.Warn("gRPC listens on every interface but advertises loopback; on a multi-node fleet set --advertise-address", "grpc", a.GRPCAddr())
		}
	}
	if err := a.Run(ctx); err != nil {
		log.Error("worker failed", "err", err)
		return 1
	}
	return 0
}

// exitCode is 2 for a usage error, else 1.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// loggedDiscovery says why GPU discovery failed: in auto mode the worker
// falls back to the CPU, and a broken driver must not pass unnoticed.
type loggedDiscovery struct {
	devices.Discoverer
	log *slog.Logger
}

func (d loggedDiscovery) Discover(ctx context.Context) ([]devices.Info, error) {
	infos, err := d.Discoverer.Discover(ctx)
	switch {
	case errors.Is(err, devices.ErrNoDriver):
		d.log.Info("no NVIDIA driver; GPUs unavailable", "reason", err)
	case err != nil:
		d.log.Warn("GPU discovery failed", "err", err)
	}
	return infos, err
}
