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
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetconfig"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/sfu"
	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
	"github.com/avatarfleet/avatarfleet/worker/pkg/devices"
	"github.com/avatarfleet/avatarfleet/worker/pkg/idleloop"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync/batch"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// envPrefix prefixes the environment variable of every flag.
const envPrefix = fleetconfig.EnvPrefix

// Config is the worker's whole configuration, as flags and AVATARFLEET_*
// variables set it (fleetconfig reads both). A setting is one field here,
// one line in AddFlags and, when it has bounds, one check in Validate.
// Secrets that must not be flags (TURN credential, TTS API key, etcd and
// NATS passwords) come from the environment.
type Config struct {
	ID               string
	Etcd, NATS       string
	GRPCListen       string
	AdvertiseAddress string
	MediaPort        int
	PublicIP         string
	MediaListenIP    string
	ICEServers       string
	ICEUsername      string
	ICELite          bool
	MaxViewers       int
	SendBatching     string
	GPUs             string
	SlotsPerGPU      int
	// SlotsAuto is --slots-per-gpu auto: measure each device at start
	// (SlotsPerGPU is then 0).
	SlotsAuto        bool
	Model            string
	Avatars          string
	LeaseTTL         time.Duration
	DrainTimeout     time.Duration
	NoDrainMigration bool
	EtcdPrefix       string
	ONNXRuntimeLib   string
	TTS              string
	TTSURL           string
	TTSModel         string
	TTSVoice         string
	Prewarm          int
	IntraOpThreads   int
	BatchSessions    int
	BatchDelay       time.Duration
	// IdleShare: idle sessions send their avatar's idle loop encoded once
	// (--idle-share=false: every session encodes its own idle frames).
	IdleShare bool
	// IdleCacheMiB bounds the shared idle loops' encoded frames.
	IdleCacheMiB  int
	MetricsListen string
	// MemoryLimit is the soft memory limit: "auto", "off" or a size.
	MemoryLimit string
	DataDir     string

	Log       fleetconfig.Log
	Links     fleetconfig.Links
	Recording RecordingFlags

	// getenv reads the secrets (nil → os.Getenv).
	getenv func(string) string
}

// DefaultMetricsListen is loopback: /metrics is for a local scraper or an
// operator who binds it to a private address on purpose.
const DefaultMetricsListen = "127.0.0.1:9091"

// AddFlags registers every flag of c, with its default.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ID, "id", "", "worker id (default: the hostname)")
	fs.StringVar(&c.Etcd, "etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	fs.StringVar(&c.NATS, "nats", "nats://127.0.0.1:4222", "NATS URL")
	fs.StringVar(&c.GRPCListen, "grpc-listen", agent.DefaultGRPCListen, "WorkerService listen address (loopback by default: on a multi-node fleet bind the private address)")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", "", "host:port the control plane dials (default: --grpc-listen, with 127.0.0.1 for a wildcard host; never --public-ip)")
	fs.IntVar(&c.MediaPort, "media-port", agent.DefaultMediaPort, "UDP port for all WebRTC media")
	fs.StringVar(&c.PublicIP, "public-ip", "", "IP address ICE candidates advertise")
	fs.StringVar(&c.MediaListenIP, "media-listen-ip", "0.0.0.0", "local IP the media UDP port binds")
	fs.StringVar(&c.ICEServers, "ice-servers", "", "STUN/TURN URLs handed to viewers (Link rel=ice-server), comma-separated, e.g. stun:stun.example.net:3478,turn:turn.example.net:3478?transport=udp")
	fs.StringVar(&c.ICEUsername, "ice-username", "", "username for the turn: URLs of --ice-servers (credential from "+iceCredentialEnv+")")
	fs.BoolVar(&c.ICELite, "ice-lite", false, "run ICE as a lite agent (for a worker with a public address)")
	fs.IntVar(&c.MaxViewers, "max-viewers", sfu.DefaultMaxViewersPerRoom, "viewers per session")
	fs.StringVar(&c.SendBatching, "send-batching", "gso", "how the SFU sends a frame's packets to its viewers: gso (sendmmsg + UDP GSO where the kernel has it), sendmmsg, or off (one sendto per packet)")
	fs.StringVar(&c.GPUs, "gpus", "auto", "devices: auto (NVML, else CPU), cpu, or GPU indices like 0,1")
	fs.Var(&slotsFlag{n: &c.SlotsPerGPU, auto: &c.SlotsAuto}, "slots-per-gpu", "sessions per device: 1.."+strconv.Itoa(devices.MaxSlotsPerGPU)+", or auto to time the model on each device at start (default 1 on a GPU, 2 on the CPU)")
	fs.StringVar(&c.Model, "model", "", "ONNX model file (default: the generated default model)")
	fs.StringVar(&c.Avatars, "avatars", "", "directory of avatar packs (default: the bundled avatar)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", agent.DefaultLeaseTTL, "worker lease TTL, 1s..60s")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", agent.DefaultDrainTimeout, "how long a drain waits for sessions before ending them")
	fs.BoolVar(&c.NoDrainMigration, "no-drain-migration", false, "on SIGTERM, let sessions end here instead of asking the control plane to move them to workers with free slots")
	fs.StringVar(&c.EtcdPrefix, "etcd-prefix", fleetstore.DefaultPrefix, "etcd key prefix of the fleet")
	fs.StringVar(&c.ONNXRuntimeLib, "onnxruntime-lib", "", "ONNX Runtime shared library (default: scripts/setup.sh's under .tools, else the system's)")
	fs.StringVar(&c.TTS, "tts", ttsEspeak, "speech synthesis engine: "+ttsEngines().Describe()+" (a server engine's API key from "+ttsAPIKeyEnv+")")
	fs.StringVar(&c.TTSURL, "tts-url", "", "base URL of the --tts http server")
	fs.StringVar(&c.TTSModel, "tts-model", "", "model name sent to the --tts http server (default: the engine's)")
	fs.StringVar(&c.TTSVoice, "tts-voice", "", "default TTS voice (default: the engine's)")
	fs.IntVar(&c.Prewarm, "prewarm", prewarmSlots, "inference contexts made per GPU at start (-1: as many as its slots)")
	fs.IntVar(&c.IntraOpThreads, "intra-op-threads", 1, "ONNX Runtime intra-op threads per session")
	fs.IntVar(&c.BatchSessions, "batch-sessions", 0, "run each GPU's sessions through one cross-session batching executor, up to this many frames per model call (0: a context per session)")
	fs.DurationVar(&c.BatchDelay, "batch-delay", batch.DefaultMaxDelay, "with --batch-sessions, the longest a frame waits for its batch to fill (0..40ms)")
	fs.BoolVar(&c.IdleShare, "idle-share", true, "encode each avatar's idle loop once and let its idle sessions send it (false: every session encodes its own idle frames)")
	fs.IntVar(&c.IdleCacheMiB, "idle-cache-mib", idleloop.DefaultMaxBytes>>20, "bound on the shared idle loops' encoded frames, in MiB (1..65536); a loop that does not fit is not shared")
	fs.StringVar(&c.MetricsListen, "metrics-listen", DefaultMetricsListen, "Prometheus /metrics listen address, plain HTTP (empty: disabled)")
	fs.StringVar(&c.MemoryLimit, "memory-limit", "auto", "soft memory limit of the process: auto (80% of the cgroup's or the machine's memory), off, or a size like 4GiB; sessions' queued input may take a quarter of it, and past it the greediest session is shed")
	fs.StringVar(&c.DataDir, "data-dir", ".avatarfleet", "data directory; without --fleet-* files the worker issues itself a certificate from the development CA in <data-dir>/pki (development only)")
	c.Log.AddFlags(fs)
	c.Links.AddFlags(fs)
	c.Recording.AddFlags(fs)
}

// Validate checks every setting; errors name the flag.
func (c Config) Validate() error {
	_, err := c.resolve()
	return err
}

// config is a validated Config turned into what run needs.
type config struct {
	opts    agent.Options
	media   mediaConfig
	sfu     sfuConfig
	gpus    devices.Spec
	slots   int
	auto    bool // --slots-per-gpu auto
	log     fleetconfig.Log
	links   fleetconfig.Links
	dataDir string
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
func envName(flagName string) string { return fleetconfig.EnvName(flagName) }

// parseConfig reads flags, then the environment for every flag not given on
// the command line (flags win), and validates everything. It returns
// flag.ErrHelp for -h.
func parseConfig(args []string, getenv func(string) string, hostname func() (string, error), usageOut io.Writer) (*config, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fleetconfig.SetUsage(fs, "worker", usageOut)
	c := Config{getenv: getenv}
	c.AddFlags(fs)
	if err := fleetconfig.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if c.ID == "" {
		h, err := hostname()
		if err != nil {
			return nil, usagef("--id not given and the hostname is unknown: %v", err)
		}
		c.ID = h
	}
	return c.resolve()
}

// resolve checks c and turns it into the run settings.
func (c Config) resolve() (*config, error) {
	getenv := c.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	out := &config{slots: c.SlotsPerGPU, auto: c.SlotsAuto, log: c.Log, links: c.Links, dataDir: c.DataDir}
	if !fleetstore.ValidName(c.ID) {
		return nil, usagef("--id %q: want 1..64 characters of [a-zA-Z0-9_.-] starting with a letter or digit (the default is the hostname)", c.ID)
	}
	endpoints, err := parseEndpoints(c.Etcd)
	if err != nil {
		return nil, err
	}
	if err := checkNATSURL(c.NATS); err != nil {
		return nil, err
	}
	if err := checkHostPort("--grpc-listen", c.GRPCListen, true); err != nil {
		return nil, err
	}
	if c.AdvertiseAddress != "" {
		if err := checkHostPort("--advertise-address", c.AdvertiseAddress, false); err != nil {
			return nil, err
		}
		if h, _, _ := net.SplitHostPort(c.AdvertiseAddress); h == "" {
			return nil, usagef("--advertise-address %q: needs a host", c.AdvertiseAddress)
		}
	}
	if c.MediaPort < 1 || c.MediaPort > 65535 {
		return nil, usagef("--media-port %d: want 1..65535", c.MediaPort)
	}
	if c.PublicIP != "" && net.ParseIP(c.PublicIP) == nil {
		return nil, usagef("--public-ip %q is not an IP address", c.PublicIP)
	}
	if err := out.sfu.set(c.MediaListenIP, c.ICEServers, c.ICEUsername, getenv(iceCredentialEnv), c.ICELite, c.MaxViewers); err != nil {
		return nil, err
	}
	if err := out.sfu.setBatching(c.SendBatching); err != nil {
		return nil, err
	}
	if out.gpus, err = devices.ParseSpec(c.GPUs); err != nil {
		return nil, usageError{err}
	}
	if c.SlotsPerGPU < 0 || c.SlotsPerGPU > devices.MaxSlotsPerGPU {
		return nil, usagef("--slots-per-gpu %d: want 1..%d, or auto (0 for the default)", c.SlotsPerGPU, devices.MaxSlotsPerGPU)
	}
	if c.SlotsAuto && c.SlotsPerGPU != 0 {
		return nil, usagef("--slots-per-gpu: auto and a count %d both set", c.SlotsPerGPU)
	}
	if err := checkPath("--model", c.Model, false); err != nil {
		return nil, err
	}
	if err := checkPath("--avatars", c.Avatars, true); err != nil {
		return nil, err
	}
	if err := checkPath("--onnxruntime-lib", c.ONNXRuntimeLib, false); err != nil {
		return nil, err
	}
	if err := out.media.setTTS(c.TTS, c.TTSURL, c.TTSModel, c.TTSVoice, getenv(ttsAPIKeyEnv)); err != nil {
		return nil, err
	}
	if c.Prewarm < prewarmSlots || c.Prewarm > devices.MaxSlotsPerGPU {
		return nil, usagef("--prewarm %d: want 0..%d, or -1 for as many as the slots", c.Prewarm, devices.MaxSlotsPerGPU)
	}
	if c.IntraOpThreads < 1 || c.IntraOpThreads > maxIntraOpThreads {
		return nil, usagef("--intra-op-threads %d: want 1..%d", c.IntraOpThreads, maxIntraOpThreads)
	}
	if c.MetricsListen != "" {
		if err := checkHostPort("--metrics-listen", c.MetricsListen, true); err != nil {
			return nil, err
		}
	}
	if out.media.memoryLimit, err = mediaruntime.ParseMemoryLimit(c.MemoryLimit); err != nil {
		return nil, usagef("--memory-limit: %v", err)
	}
	out.media.onnxLib, out.media.model, out.media.avatars = c.ONNXRuntimeLib, c.Model, c.Avatars
	if c.BatchSessions < 0 || c.BatchSessions > maxBatchSessions {
		return nil, usagef("--batch-sessions %d: want 0..%d", c.BatchSessions, maxBatchSessions)
	}
	if c.BatchDelay < 0 || c.BatchDelay > maxBatchDelay {
		return nil, usagef("--batch-delay %v: want 0..%v", c.BatchDelay, maxBatchDelay)
	}
	out.media.prewarm, out.media.intraOpThreads = c.Prewarm, c.IntraOpThreads
	out.media.batchSessions, out.media.batchDelay = c.BatchSessions, c.BatchDelay
	if c.IdleCacheMiB < 1 || c.IdleCacheMiB > maxIdleCacheMiB {
		return nil, usagef("--idle-cache-mib %d: want 1..%d", c.IdleCacheMiB, maxIdleCacheMiB)
	}
	out.media.noIdleShare, out.media.idleCacheBytes = !c.IdleShare, int64(c.IdleCacheMiB)<<20
	if out.media.recording, err = c.Recording.resolve(getenv); err != nil {
		return nil, err
	}
	if c.LeaseTTL < agent.MinLeaseTTL || c.LeaseTTL > agent.MaxLeaseTTL {
		return nil, usagef("--lease-ttl %s: want %s..%s", c.LeaseTTL, agent.MinLeaseTTL, agent.MaxLeaseTTL)
	}
	if c.DrainTimeout < 0 {
		return nil, usagef("--drain-timeout %s is negative", c.DrainTimeout)
	}
	if !strings.HasPrefix(c.EtcdPrefix, "/") {
		return nil, usagef("--etcd-prefix %q: must start with /", c.EtcdPrefix)
	}
	if c.DataDir == "" {
		return nil, usagef("--data-dir: empty")
	}
	if err := c.Log.Validate(); err != nil {
		return nil, usageError{err}
	}
	if err := c.Links.Validate(); err != nil {
		return nil, usageError{err}
	}
	etcdCfg, err := c.Links.Etcd(endpoints, getenv)
	if err != nil {
		return nil, usageError{err}
	}
	natsCfg, err := c.Links.NATS(c.NATS, "avatarfleet-worker/"+c.ID, getenv)
	if err != nil {
		return nil, usageError{err}
	}
	out.opts = agent.Options{
		ID:               c.ID,
		EtcdEndpoints:    etcdCfg.Endpoints,
		Etcd:             etcdCfg,
		EtcdPrefix:       c.EtcdPrefix,
		NATSURL:          c.NATS,
		NATS:             natsCfg,
		GRPCListen:       c.GRPCListen,
		AdvertiseAddress: c.AdvertiseAddress,
		PublicIP:         c.PublicIP,
		MediaPort:        c.MediaPort,
		LeaseTTL:         c.LeaseTTL,
		DrainTimeout:     c.DrainTimeout,
		NoDrainMigration: c.NoDrainMigration,
		ModelPath:        c.Model,
		AvatarsPath:      c.Avatars,
		MetricsListen:    c.MetricsListen,
	}
	return out, nil
}

// maxIntraOpThreads bounds --intra-op-threads.
const maxIntraOpThreads = 64

// maxBatchSessions and maxBatchDelay bound --batch-sessions and
// --batch-delay (a frame's whole budget is 40 ms).
const (
	maxBatchSessions = 256
	maxIdleCacheMiB  = 65536
	maxBatchDelay    = 40 * time.Millisecond
)

// setTTS checks the --tts flags against the engine they select (by name,
// through the TTS registry).
func (m *mediaConfig) setTTS(engine, baseURL, model, voice, key string) error {
	opts := tts.EngineOptions{URL: baseURL, Model: model, Voice: voice, APIKey: key}
	if err := ttsEngines().Check(engine, opts); err != nil {
		return usagef("--tts %q (with --tts-url %q, --tts-model %q, --tts-voice %q): %v", engine, baseURL, model, voice, err)
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
func (c *config) logger(w io.Writer) *slog.Logger { return c.log.Logger(w) }
