package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/sfu"
	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
	"github.com/avatarfleet/avatarfleet/worker/pkg/devices"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// envPrefix prefixes the environment variable of every flag.
const envPrefix = "AVATARFLEET_"

// config is the parsed command line.
type config struct {
	opts      agent.Options
	media     mediaConfig
	sfu       sfuConfig
	gpus      devices.Spec
	slots     int
	logLevel  slog.Level
	logFormat string
}

// usageError is a bad flag or value: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// envName is the environment variable of a flag: --grpc-listen →
// AVATARFLEET_GRPC_LISTEN.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags, then the environment for every flag not given on
// the command line (flags win), and validates everything. It returns
// flag.ErrHelp for -h.
func parseConfig(args []string, getenv func(string) string, hostname func() (string, error), usageOut io.Writer) (*config, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	var (
		id           = fs.String("id", "", "worker id (default: the hostname)")
		etcd         = fs.String("etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
		natsURL      = fs.String("nats", "nats://127.0.0.1:4222", "NATS URL")
		grpcListen   = fs.String("grpc-listen", agent.DefaultGRPCListen, "WorkerService listen address")
		advertise    = fs.String("advertise-address", "", "host:port the control plane dials (default: from --grpc-listen, with --public-ip or 127.0.0.1 for a wildcard host)")
		mediaPort    = fs.Int("media-port", agent.DefaultMediaPort, "UDP port for all WebRTC media")
		publicIP     = fs.String("public-ip", "", "IP address ICE candidates advertise")
		mediaListen  = fs.String("media-listen-ip", "0.0.0.0", "local IP the media UDP port binds")
		iceServers   = fs.String("ice-servers", "", "STUN/TURN URLs handed to viewers (Link rel=ice-server), comma-separated, e.g. stun:stun.example.net:3478,turn:turn.example.net:3478?transport=udp")
		iceUser      = fs.String("ice-username", "", "username for the turn: URLs of --ice-servers (credential from "+iceCredentialEnv+")")
		iceLite      = fs.Bool("ice-lite", false, "run ICE as a lite agent (for a worker with a public address)")
		maxViewers   = fs.Int("max-viewers", sfu.DefaultMaxViewersPerRoom, "viewers per session")
		gpus         = fs.String("gpus", "auto", "devices: auto (NVML, else CPU), cpu, or GPU indices like 0,1")
		slots        = fs.Int("slots-per-gpu", 0, "sessions per device (default 1 on a GPU, 2 on the CPU)")
		model        = fs.String("model", "", "ONNX model file (default: the generated default model)")
		avatars      = fs.String("avatars", "", "directory of avatar packs (default: the bundled avatar)")
		leaseTTL     = fs.Duration("lease-ttl", agent.DefaultLeaseTTL, "worker lease TTL, 1s..60s")
		drainTimeout = fs.Duration("drain-timeout", agent.DefaultDrainTimeout, "how long a drain waits for sessions before ending them")
		etcdPrefix   = fs.String("etcd-prefix", fleetstore.DefaultPrefix, "etcd key prefix of the fleet")
		onnxLib      = fs.String("onnxruntime-lib", "", "ONNX Runtime shared library (default: scripts/setup.sh's under .tools, else the system's)")
		ttsEngine    = fs.String("tts", ttsEspeak, "speech synthesis: espeak (local espeak-ng) or http (OpenAI-compatible /v1/audio/speech; key from "+ttsAPIKeyEnv+")")
		ttsURL       = fs.String("tts-url", "", "base URL of the --tts http server")
		ttsModel     = fs.String("tts-model", "", "model name sent to the --tts http server (default: the engine's)")
		ttsVoice     = fs.String("tts-voice", "", "default TTS voice (default: the engine's)")
		prewarm      = fs.Int("prewarm", prewarmSlots, "inference contexts made per GPU at start (-1: as many as its slots)")
		intraOp      = fs.Int("intra-op-threads", 1, "ONNX Runtime intra-op threads per session")
		metrics      = fs.String("metrics-listen", ":9091", "Prometheus /metrics listen address (empty: disabled)")
		memLimit     = fs.String("memory-limit", "auto", "soft memory limit of the process: auto (80% of the cgroup's or the machine's memory), off, or a size like 4GiB; sessions' queued input may take a quarter of it, and past it the greediest session is shed")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat    = fs.String("log-format", "text", "text or json")
	)
	fs.Usage = func() {
		fmt.Fprintf(usageOut, "Usage: worker [flags]\n\nEvery flag can also be set as %s<FLAG> (upper case, - → _); flags win.\n\n", envPrefix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usagef("%s=%q: %v", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}

	c := &config{slots: *slots, logFormat: *logFormat}
	if *id == "" {
		h, err := hostname()
		if err != nil {
			return nil, usagef("--id not given and the hostname is unknown: %v", err)
		}
		*id = h
	}
	if !fleetstore.ValidName(*id) {
		return nil, usagef("--id %q: want 1..64 characters of [a-zA-Z0-9_.-] starting with a letter or digit (the default is the hostname)", *id)
	}
	endpoints, err := parseEndpoints(*etcd)
	if err != nil {
		return nil, err
	}
	if err := checkNATSURL(*natsURL); err != nil {
		return nil, err
	}
	if err := checkHostPort("--grpc-listen", *grpcListen, true); err != nil {
		return nil, err
	}
	if *advertise != "" {
		if err := checkHostPort("--advertise-address", *advertise, false); err != nil {
			return nil, err
		}
		if h, _, _ := net.SplitHostPort(*advertise); h == "" {
			return nil, usagef("--advertise-address %q: needs a host", *advertise)
		}
	}
	if *mediaPort < 1 || *mediaPort > 65535 {
		return nil, usagef("--media-port %d: want 1..65535", *mediaPort)
	}
	if *publicIP != "" && net.ParseIP(*publicIP) == nil {
		return nil, usagef("--public-ip %q is not an IP address", *publicIP)
	}
	if err := c.sfu.set(*mediaListen, *iceServers, *iceUser, getenv(iceCredentialEnv), *iceLite, *maxViewers); err != nil {
		return nil, err
	}
	if c.gpus, err = devices.ParseSpec(*gpus); err != nil {
		return nil, usageError{err}
	}
	if *slots < 0 || *slots > devices.MaxSlotsPerGPU {
		return nil, usagef("--slots-per-gpu %d: want 1..%d (0 for the default)", *slots, devices.MaxSlotsPerGPU)
	}
	if err := checkPath("--model", *model, false); err != nil {
		return nil, err
	}
	if err := checkPath("--avatars", *avatars, true); err != nil {
		return nil, err
	}
	if err := checkPath("--onnxruntime-lib", *onnxLib, false); err != nil {
		return nil, err
	}
	if err := c.media.setTTS(*ttsEngine, *ttsURL, *ttsModel, *ttsVoice, getenv(ttsAPIKeyEnv)); err != nil {
		return nil, err
	}
	if *prewarm < prewarmSlots || *prewarm > devices.MaxSlotsPerGPU {
		return nil, usagef("--prewarm %d: want 0..%d, or -1 for as many as the slots", *prewarm, devices.MaxSlotsPerGPU)
	}
	if *intraOp < 1 || *intraOp > maxIntraOpThreads {
		return nil, usagef("--intra-op-threads %d: want 1..%d", *intraOp, maxIntraOpThreads)
	}
	if *metrics != "" {
		if err := checkHostPort("--metrics-listen", *metrics, true); err != nil {
			return nil, err
		}
	}
	if c.media.memoryLimit, err = mediaruntime.ParseMemoryLimit(*memLimit); err != nil {
		return nil, usagef("--memory-limit: %v", err)
	}
	c.media.onnxLib, c.media.model, c.media.avatars = *onnxLib, *model, *avatars
	c.media.prewarm, c.media.intraOpThreads = *prewarm, *intraOp
	if *leaseTTL < agent.MinLeaseTTL || *leaseTTL > agent.MaxLeaseTTL {
		return nil, usagef("--lease-ttl %s: want %s..%s", *leaseTTL, agent.MinLeaseTTL, agent.MaxLeaseTTL)
	}
	if *drainTimeout < 0 {
		return nil, usagef("--drain-timeout %s is negative", *drainTimeout)
	}
	if !strings.HasPrefix(*etcdPrefix, "/") {
		return nil, usagef("--etcd-prefix %q: must start with /", *etcdPrefix)
	}
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return nil, usagef("--log-format %q: want text or json", c.logFormat)
	}
	c.opts = agent.Options{
		ID:               *id,
		EtcdEndpoints:    endpoints,
		EtcdPrefix:       *etcdPrefix,
		NATSURL:          *natsURL,
		GRPCListen:       *grpcListen,
		AdvertiseAddress: *advertise,
		PublicIP:         *publicIP,
		MediaPort:        *mediaPort,
		LeaseTTL:         *leaseTTL,
		DrainTimeout:     *drainTimeout,
		ModelPath:        *model,
		AvatarsPath:      *avatars,
		MetricsListen:    *metrics,
	}
	return c, nil
}

// maxIntraOpThreads bounds --intra-op-threads.
const maxIntraOpThreads = 64

// setTTS checks the --tts flags.
func (m *mediaConfig) setTTS(engine, baseURL, model, voice, key string) error {
	switch engine {
	case ttsEspeak:
		if baseURL != "" || model != "" {
			return usagef("--tts-url and --tts-model are for --tts http")
		}
	case ttsHTTP:
		u, err := url.Parse(baseURL)
		if baseURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("--tts http needs --tts-url http(s)://host[:port] (got %q)", baseURL)
		}
	default:
		return usagef("--tts %q: want espeak or http", engine)
	}
	if voice != "" {
		if err := tts.CheckVoice(voice); err != nil {
			return usagef("--tts-voice: %v", err)
		}
	}
	m.tts, m.ttsURL, m.ttsModel, m.ttsVoice, m.ttsKey = engine, baseURL, model, voice, key
	return nil
}

func parseEndpoints(s string) ([]string, error) {
	var out []string
	for ep := range strings.SplitSeq(s, ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, usagef("--etcd endpoint %q: want http(s)://host:port", ep)
			}
		} else if err := checkHostPort("--etcd endpoint", ep, false); err != nil {
			return nil, err
		}
		out = append(out, ep)
	}
	if len(out) == 0 {
		return nil, usagef("--etcd: no endpoints")
	}
	return out, nil
}

func checkNATSURL(s string) error {
	if strings.TrimSpace(s) == "" {
		return usagef("--nats: no URL")
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		u, err := url.Parse(part)
		if err != nil || u.Host == "" {
			return usagef("--nats %q: want a URL such as nats://host:4222", part)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return usagef("--nats %q: scheme %q is not nats, tls, ws or wss", part, u.Scheme)
		}
	}
	return nil
}

func checkHostPort(name, s string, allowZero bool) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return usagef("%s %q: want host:port: %v", name, s, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !allowZero) {
		return usagef("%s %q: bad port %q", name, s, port)
	}
	return nil
}

func checkPath(name, path string, wantDir bool) error {
	if path == "" {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return usagef("%s %q: %v", name, path, err)
	}
	if wantDir && !st.IsDir() {
		return usagef("%s %q is not a directory", name, path)
	}
	if !wantDir && st.IsDir() {
		return usagef("%s %q is a directory, want a file", name, path)
	}
	return nil
}

// resolveDevices turns --gpus/--slots-per-gpu into devices, discovering
// GPUs through NVML when needed.
func (c *config) resolveDevices(ctx context.Context, d devices.Discoverer) ([]*fleetv1.GPU, error) {
	devs, err := devices.Resolve(ctx, c.gpus, c.slots, d)
	if err != nil {
		return nil, usageError{err}
	}
	return devs, nil
}

// logger builds the process logger.
func (c *config) logger(w io.Writer) *slog.Logger {
	hopts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}
