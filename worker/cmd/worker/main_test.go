package main

import (
	"bytes"
	"errors"
	"flag"
	"image/jpeg"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
	"github.com/avatarfleet/avatarfleet/worker/pkg/devices"
)

var servers *fleettest.Servers

// startTimeout bounds a worker's start: it loads ONNX Runtime and builds
// the default avatar (half a second normally, several under -race on two
// busy cores).
const startTimeout = time.Minute

func TestMain(m *testing.M) { fleettest.Main(m, &servers) }

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func host(name string) func() (string, error) {
	return func() (string, error) { return name, nil }
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), host("gpu-node-1"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if o.ID != "gpu-node-1" || !slices.Equal(o.EtcdEndpoints, []string{"http://127.0.0.1:2379"}) || o.NATSURL != "nats://127.0.0.1:4222" ||
		o.GRPCListen != "127.0.0.1:9090" || o.MediaPort != 50000 || o.LeaseTTL != 5*time.Second || o.DrainTimeout != 60*time.Second ||
		o.EtcdPrefix != fleetstore.DefaultPrefix || o.AdvertiseAddress != "" || c.gpus.Mode != devices.ModeAuto || c.slots != 0 {
		t.Fatalf("defaults = %+v, gpus %+v", o, c.gpus)
	}
}

func TestParseConfigEnvAndPrecedence(t *testing.T) {
	dir := t.TempDir()
	c, err := parseConfig(
		[]string{"--id", "from-flag", "--etcd", "http://a:2379, http://b:2379"},
		env(map[string]string{
			"AVATARFLEET_ID":            "from-env",
			"AVATARFLEET_GRPC_LISTEN":   "127.0.0.1:0",
			"AVATARFLEET_SLOTS_PER_GPU": "3",
			"AVATARFLEET_GPUS":          "cpu",
			"AVATARFLEET_LEASE_TTL":     "2s",
			"AVATARFLEET_AVATARS":       dir,
			"AVATARFLEET_PUBLIC_IP":     "203.0.113.9",
		}),
		host("ignored"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if o.ID != "from-flag" {
		t.Errorf("flag must win over env: id %q", o.ID)
	}
	if !slices.Equal(o.EtcdEndpoints, []string{"http://a:2379", "http://b:2379"}) {
		t.Errorf("etcd = %v", o.EtcdEndpoints)
	}
	if o.GRPCListen != "127.0.0.1:0" || c.slots != 3 || c.gpus.Mode != devices.ModeCPU || o.LeaseTTL != 2*time.Second ||
		o.AvatarsPath != dir || o.PublicIP != "203.0.113.9" {
		t.Errorf("env not applied: %+v slots=%d gpus=%+v", o, c.slots, c.gpus)
	}
}

func TestParseConfigRejects(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		hostname string
	}{
		{name: "bad id", args: []string{"--id", "a/b"}},
		{name: "hostname not a valid id", hostname: strings.Repeat("h", 70)},
		{name: "empty etcd", args: []string{"--etcd", " , "}},
		{name: "etcd scheme", args: []string{"--etcd", "ftp://x:1"}},
		{name: "etcd no port", args: []string{"--etcd", "localhost"}},
		{name: "nats scheme", args: []string{"--nats", "http://x:4222"}},
		{name: "nats empty", args: []string{"--nats", ""}},
		{name: "grpc listen", args: []string{"--grpc-listen", "9090"}},
		{name: "grpc listen port", args: []string{"--grpc-listen", ":99999"}},
		{name: "advertise port 0", args: []string{"--advertise-address", "10.0.0.1:0"}},
		{name: "advertise no host", args: []string{"--advertise-address", ":9090"}},
		{name: "media port", args: []string{"--media-port", "0"}},
		{name: "media port high", args: []string{"--media-port", "65536"}},
		{name: "public ip", args: []string{"--public-ip", "my-host"}},
		{name: "gpus", args: []string{"--gpus", "first"}},
		{name: "slots negative", args: []string{"--slots-per-gpu", "-1"}},
		{name: "slots too many", args: []string{"--slots-per-gpu", "1000"}},
		{name: "model missing", args: []string{"--model", missing}},
		{name: "model is a dir", args: []string{"--model", dir}},
		{name: "avatars missing", args: []string{"--avatars", missing}},
		{name: "avatars is a file", args: []string{"--avatars", file}},
		{name: "lease ttl short", args: []string{"--lease-ttl", "500ms"}},
		{name: "lease ttl long", args: []string{"--lease-ttl", "2m"}},
		{name: "drain negative", args: []string{"--drain-timeout", "-1s"}},
		{name: "etcd prefix", args: []string{"--etcd-prefix", "fleet"}},
		{name: "log level", args: []string{"--log-level", "verbose"}},
		{name: "log format", args: []string{"--log-format", "xml"}},
		{name: "positional", args: []string{"extra"}},
		{name: "unknown flag", args: []string{"--max_session", "4"}},
		{name: "bad duration", args: []string{"--drain-timeout", "soon"}},
		{name: "bad env value", env: map[string]string{"AVATARFLEET_MEDIA_PORT": "udp"}},
		{name: "bad env id", env: map[string]string{"AVATARFLEET_ID": "a b"}},
		{name: "onnxruntime lib missing", args: []string{"--onnxruntime-lib", missing}},
		{name: "onnxruntime lib env missing", env: map[string]string{"AVATARFLEET_ONNXRUNTIME_LIB": missing}},
		{name: "tts unknown", args: []string{"--tts", "festival"}},
		{name: "tts http no url", args: []string{"--tts", "http"}},
		{name: "tts http bad url", args: []string{"--tts", "http", "--tts-url", "ftp://x"}},
		{name: "tts url for espeak", args: []string{"--tts-url", "http://x"}},
		{name: "tts voice", args: []string{"--tts-voice", "a voice"}},
		{name: "prewarm", args: []string{"--prewarm", "-2"}},
		{name: "prewarm too many", args: []string{"--prewarm", "1000"}},
		{name: "intra-op threads", args: []string{"--intra-op-threads", "0"}},
		{name: "batch sessions negative", args: []string{"--batch-sessions", "-1"}},
		{name: "batch sessions too many", args: []string{"--batch-sessions", "257"}},
		{name: "batch delay negative", args: []string{"--batch-delay", "-1ms"}},
		{name: "batch delay past a frame", args: []string{"--batch-delay", "41ms"}},
		{name: "idle cache zero", args: []string{"--idle-cache-mib", "0"}},
		{name: "idle cache too big", args: []string{"--idle-cache-mib", "65537"}},
		{name: "idle share not a bool", args: []string{"--idle-share=maybe"}},
		{name: "metrics listen", args: []string{"--metrics-listen", "9091"}},
		{name: "media listen ip", args: []string{"--media-listen-ip", "eth0"}},
		{name: "max viewers zero", args: []string{"--max-viewers", "0"}},
		{name: "max viewers too many", args: []string{"--max-viewers", "100000"}},
		{name: "ice server scheme", args: []string{"--ice-servers", "http://stun.example.net"}},
		{name: "ice server garbage", args: []string{"--ice-servers", "stun:"}},
		{name: "turn without credential", args: []string{"--ice-servers", "turn:turn.example.net:3478", "--ice-username", "u"}},
		{name: "turn without username", args: []string{"--ice-servers", "turn:turn.example.net:3478"}, env: map[string]string{"AVATARFLEET_ICE_CREDENTIAL": "p"}},
		{name: "too many ice servers", args: []string{"--ice-servers", strings.Repeat("stun:s.example.net,", 9)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.hostname
			if h == "" {
				h = "node"
			}
			_, err := parseConfig(tt.args, env(tt.env), host(h), io.Discard)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a usage error", err)
			}
		})
	}
	// The valid model file passes.
	if _, err := parseConfig([]string{"--model", file}, env(nil), host("n"), io.Discard); err != nil {
		t.Fatal(err)
	}
}

func TestParseConfigMedia(t *testing.T) {
	c, err := parseConfig(nil, env(nil), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m := c.media; m.tts != ttsEspeak || m.prewarm != prewarmSlots || m.intraOpThreads != 1 || m.onnxLib != "" || m.model != "" || c.opts.MetricsListen != "127.0.0.1:9091" ||
		m.batchSessions != 0 || m.batchDelay != 4*time.Millisecond || m.noIdleShare || m.idleCacheBytes != 256<<20 {
		t.Errorf("media defaults %+v, metrics %q", m, c.opts.MetricsListen)
	}
	c, err = parseConfig([]string{"--idle-cache-mib", "8"}, env(map[string]string{"AVATARFLEET_IDLE_SHARE": "false"}), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m := c.media; !m.noIdleShare || m.idleCacheBytes != 8<<20 {
		t.Errorf("idle flags: share off %v, cache %d bytes", m.noIdleShare, m.idleCacheBytes)
	}
	c, err = parseConfig([]string{"--tts", "http", "--tts-url", "https://tts.example:8443", "--tts-model", "m1", "--tts-voice", "alloy",
		"--prewarm", "0", "--intra-op-threads", "4", "--metrics-listen", "", "--batch-sessions", "16", "--batch-delay", "2ms"},
		env(map[string]string{"AVATARFLEET_TTS_API_KEY": "sk-1"}), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if m := c.media; m.tts != ttsHTTP || m.ttsURL != "https://tts.example:8443" || m.ttsModel != "m1" || m.ttsVoice != "alloy" || m.ttsKey != "sk-1" ||
		m.prewarm != 0 || m.intraOpThreads != 4 || c.opts.MetricsListen != "" || m.batchSessions != 16 || m.batchDelay != 2*time.Millisecond {
		t.Errorf("media flags %+v, metrics %q", m, c.opts.MetricsListen)
	}
}

func TestParseConfigSFU(t *testing.T) {
	c, err := parseConfig(nil, env(nil), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.sfu.listenIP != "0.0.0.0" || len(c.sfu.iceServers) != 0 || c.sfu.iceLite || c.sfu.maxViewers != 50 {
		t.Errorf("SFU defaults %+v", c.sfu)
	}
	c, err = parseConfig([]string{"--ice-servers", "stun:stun.example.net:3478, turn:turn.example.net:3478?transport=udp",
		"--ice-username", "fleet", "--ice-lite", "--max-viewers", "200", "--media-listen-ip", "10.0.0.5"},
		env(map[string]string{"AVATARFLEET_ICE_CREDENTIAL": "s3cret"}), host("n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.sfu.iceServers) != 2 || !c.sfu.iceLite || c.sfu.maxViewers != 200 || c.sfu.listenIP != "10.0.0.5" {
		t.Fatalf("SFU flags %+v", c.sfu)
	}
	stun, turn := c.sfu.iceServers[0], c.sfu.iceServers[1]
	if stun.Username != "" || stun.Credential != nil {
		t.Errorf("STUN server got credentials: %+v", stun)
	}
	if turn.URLs[0] != "turn:turn.example.net:3478?transport=udp" || turn.Username != "fleet" || turn.Credential != "s3cret" {
		t.Errorf("TURN server %+v", turn)
	}
}

// TestRunBadMediaFiles: files the flags name that exist but are not what
// they should be fail the start with exit 2 and a message naming the flag.
func TestRunBadMediaFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.onnx")
	if err := os.WriteFile(junk, []byte("not an ONNX model"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		flag string
		args []string
	}{
		{"--model", []string{"--model", junk}},
		{"--onnxruntime-lib", []string{"--onnxruntime-lib", junk}},
	} {
		var out bytes.Buffer
		args := append([]string{"--gpus", "cpu", "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "", "--fleet-insecure"}, tt.args...)
		if code := run(args, env(nil), &out, nil); code != 2 {
			t.Errorf("%s junk: exit %d, want 2; output:\n%s", tt.flag, code, out.String())
		}
		if !strings.Contains(out.String(), tt.flag) {
			t.Errorf("%s junk: the error does not name the flag: %q", tt.flag, out.String())
		}
	}
}

func TestEnvName(t *testing.T) {
	if got := envName("slots-per-gpu"); got != "AVATARFLEET_SLOTS_PER_GPU" {
		t.Fatal(got)
	}
}

func TestRunExitCodes(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--media-port", "x"}, env(nil), &out, nil); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
	if !strings.Contains(out.String(), "media-port") {
		t.Fatalf("error does not name the flag: %q", out.String())
	}
	out.Reset()
	if code := run([]string{"-h"}, env(nil), &out, nil); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	if !strings.Contains(out.String(), "AVATARFLEET_") {
		t.Fatalf("usage does not mention the environment: %q", out.String())
	}
	if _, err := parseConfig([]string{"-h"}, env(nil), host("n"), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

// syncBuffer is a log sink safe to read while the worker writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunDrainsOnSIGTERM runs the real program: flags, registration, a
// SIGTERM to this process, drain, deregistration, exit code 0.
func TestRunDrainsOnSIGTERM(t *testing.T) {
	id := servers.Name(t, "w")
	prefix := servers.Prefix(t)
	store := servers.Store(t)
	var logs syncBuffer
	exited := make(chan int, 1)
	args := []string{
		"--id", id, "--etcd", strings.Join(servers.Etcd.Endpoints(), ","), "--nats", servers.NATS.URL(),
		"--grpc-listen", "127.0.0.1:0", "--gpus", "cpu", "--lease-ttl", "2s", "--drain-timeout", "0s",
		"--etcd-prefix", prefix, "--log-format", "json", "--metrics-listen", "127.0.0.1:0",
		"--media-port", strconv.Itoa(freeUDPPort(t)), "--media-listen-ip", "127.0.0.1",
		"--data-dir", devDataDir(t),
	}
	go func() {
		exited <- run(args, env(nil), &logs, func(code int) { t.Errorf("second-signal exit(%d)", code) })
	}()
	fleettest.Eventually(t, startTimeout, "worker record", func() bool {
		_, err := store.Worker(t.Context(), id)
		return err == nil
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM; logs:\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit after SIGTERM; logs:\n%s", logs.String())
	}
	if _, err := store.Worker(t.Context(), id); !errors.Is(err, fleetstore.ErrNotFound) {
		t.Fatalf("worker record after exit: %v", err)
	}
	for _, want := range []string{`"msg":"signal received; draining`, `"msg":"worker deregistered"`, `"msg":"worker stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
}

// TestSecondSignalExitsAtOnce: a drain waiting on a live session is cut
// short by a second signal.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	id := servers.Name(t, "w")
	prefix := servers.Prefix(t)
	store := servers.Store(t)
	dataDir := devDataDir(t)
	var logs syncBuffer
	exitCalls := make(chan int, 2)
	exited := make(chan int, 1)
	args := []string{
		"--id", id, "--etcd", strings.Join(servers.Etcd.Endpoints(), ","), "--nats", servers.NATS.URL(),
		"--grpc-listen", "127.0.0.1:0", "--gpus", "cpu", "--lease-ttl", "2s", "--drain-timeout", "1m",
		"--etcd-prefix", prefix, "--metrics-listen", "", "--prewarm", "1",
		"--media-port", strconv.Itoa(freeUDPPort(t)), "--media-listen-ip", "127.0.0.1",
		"--data-dir", dataDir,
	}
	go func() { exited <- run(args, env(nil), &logs, func(code int) { exitCalls <- code }) }()
	var w *fleetv1.Worker
	fleettest.Eventually(t, startTimeout, "worker record", func() bool {
		var err error
		w, err = store.Worker(t.Context(), id)
		return err == nil
	})
	// Place a session so the drain has something to wait for.
	resp, err := servers.ClientOf(store).Get(t.Context(), store.Keys().Worker(id))
	if err != nil {
		t.Fatal(err)
	}
	kv := resp.Kvs[0]
	sess := &fleetv1.Session{Id: "s1", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	if _, ok, err := store.Reserve(t.Context(), fleetstore.Reservation{Worker: id, WorkerLease: clientv3.LeaseID(kv.Lease), WorkerRevision: kv.ModRevision}, sess); err != nil || !ok {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	// The worker took its certificate from the development CA in its data
	// dir: the control plane's certificate from there is what it accepts.
	cp, err := fleetpki.DevFiles(fleetpki.DevDir(dataDir), "controlplane").Load()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(w.GetGrpcAddress(), grpc.WithTransportCredentials(credentials.NewTLS(cp.ControlPlaneClient(id))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := fleetv1.NewWorkerServiceClient(conn)
	if _, err := client.StartSession(t.Context(), &fleetv1.StartSessionRequest{Session: sess}); err != nil {
		t.Fatal(err)
	}
	// The binary runs the media runtime: the session's pipeline sends
	// frames (to the discarding transport: no SFU here), and the record
	// advertises the avatars and voices.
	fleettest.Eventually(t, 10*time.Second, "frames sent", func() bool {
		st, err := client.SessionStatus(t.Context(), &fleetv1.SessionStatusRequest{SessionId: "s1"})
		return err == nil && st.GetFramesSent() > 0
	})
	if !slices.Contains(w.GetAvatars(), "default") || len(w.GetVoices()) == 0 || w.GetTtsEngine() == "" {
		t.Errorf("worker record avatars %v voices %v tts engine %q", w.GetAvatars(), w.GetVoices(), w.GetTtsEngine())
	}
	// It serves a preview of each avatar it advertises: a small JPEG.
	pv, err := client.AvatarPreview(t.Context(), &fleetv1.AvatarPreviewRequest{Avatar: "default"})
	if err != nil {
		t.Fatalf("avatar preview: %v", err)
	}
	if img, err := jpeg.Decode(bytes.NewReader(pv.GetImage())); err != nil || pv.GetContentType() != "image/jpeg" ||
		img.Bounds().Dx() != int(pv.GetWidth()) || max(img.Bounds().Dx(), img.Bounds().Dy()) > 256 {
		t.Errorf("avatar preview %s %dx%d: decode %v", pv.GetContentType(), pv.GetWidth(), pv.GetHeight(), err)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	fleettest.Eventually(t, 5*time.Second, "draining state", func() bool {
		w, err := store.Worker(t.Context(), id)
		return err == nil && w.GetState() == fleetv1.WorkerState_WORKER_STATE_DRAINING
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exitCalls:
		if code != 1 {
			t.Fatalf("second signal exit code %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("second signal did not exit; logs:\n%s", logs.String())
	}
	// The fake exit returned, so let the drain finish: end the session the
	// way the control plane would.
	if _, _, err := store.EndSession(t.Context(), "s1", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not return; logs:\n%s", logs.String())
	}
}

// The agent keeps its own copy of the CPU slot default (to stay free of the
// cgo NVML binding); it must not drift from the devices package.
func TestCPUSlotDefaultsAgree(t *testing.T) {
	if agent.DefaultCPUSlots != devices.DefaultCPUSlots {
		t.Fatalf("agent.DefaultCPUSlots %d != devices.DefaultCPUSlots %d", agent.DefaultCPUSlots, devices.DefaultCPUSlots)
	}
}

// freeUDPPort is a UDP port that was free a moment ago, for the SFU.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
