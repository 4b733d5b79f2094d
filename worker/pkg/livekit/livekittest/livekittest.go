// Package livekittest runs a real livekit-server (built by
// scripts/livekit.sh into .tools/livekit/<Version>/) for tests: a generated
// configuration with test keys, 127.0.0.1 only, free ports, one UDP port
// for media with TCP as fallback. It also mints access tokens for it.
package livekittest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	lkproto "github.com/livekit/protocol/livekit"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// Version is the livekit-server scripts/livekit.sh builds.
const Version = "v1.13.5"

// The test server's API key and secret (livekit-server wants a secret of at
// least 32 characters).
const (
	APIKey    = "avatarfleet-test"
	APISecret = "avatarfleet-test-secret-0123456789abcdef"
)

// Server is a running livekit-server.
type Server struct {
	// URL is its signalling URL (ws://127.0.0.1:port).
	URL string
	// HTTP is the same endpoint as http://.
	HTTP string
	// Log is the file the server writes its log to.
	Log string
}

// Binary finds the server scripts/livekit.sh built (or
// $AVATARFLEET_LIVEKIT_SERVER). A missing binary fails the test with what
// to run.
func Binary(t testing.TB) string {
	t.Helper()
	return repotest.Tool(t, "AVATARFLEET_LIVEKIT_SERVER", filepath.Join("livekit", Version, "livekit-server"), "scripts/livekit.sh")
}

// Start runs a livekit-server until the test ends, and waits until it
// answers. When a port it was given is taken before it binds it (a free
// port is only free when picked), it starts again on fresh ports.
func Start(t testing.TB) *Server {
	t.Helper()
	for attempt := 1; ; attempt++ {
		if s := start(t); s != nil {
			return s
		}
		if attempt == repotest.PortAttempts {
			t.Fatalf("livekit-server: a port it was given was taken %d times", attempt)
		}
		t.Logf("livekit-server: a port it was given was taken meanwhile; starting it again on fresh ports")
	}
}

// start runs a livekit-server on fresh ports and waits until it answers;
// nil when it exited because a port was taken.
func start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	port, tcp, udp := repotest.FreePort(t, "tcp"), repotest.FreePort(t, "tcp"), repotest.FreePort(t, "udp")
	cfg := fmt.Sprintf(`port: %d
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: %d
  udp_port: %d
  use_external_ip: false
  node_ip: 127.0.0.1
  enable_loopback_candidate: true
keys:
  %s: %s
logging:
  level: info
room:
  empty_timeout: 30
  departure_timeout: 1
`, port, tcp, udp, APIKey, APISecret)
	cfgPath := filepath.Join(dir, "livekit.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "livekit.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start livekit-server: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("livekit-server log (last 4 KiB):\n%s", tail(b, 4096))
			}
		}
	})
	s := &Server{URL: fmt.Sprintf("ws://127.0.0.1:%d", port), HTTP: fmt.Sprintf("http://127.0.0.1:%d", port), Log: logPath}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			b, _ := os.ReadFile(logPath)
			if repotest.PortCollision(b) {
				return nil
			}
			t.Fatalf("livekit-server exited: %v\n%s", err, tail(b, 4096))
		default:
		}
		if ready(s.HTTP) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("livekit-server not ready on %s after 30 s", s.HTTP)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ready(base string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// Token mints an access token to join room as identity, with kind and
// attributes (an avatar's: kind agent and lk.publish_on_behalf).
func Token(t testing.TB, room, identity string, kind lkproto.ParticipantInfo_Kind, attrs map[string]string) string {
	t.Helper()
	return TokenWith(t, APIKey, APISecret, room, identity, kind, attrs)
}

// TokenWith is Token signed with another key and secret.
func TokenWith(t testing.TB, key, secret, room, identity string, kind lkproto.ParticipantInfo_Kind, attrs map[string]string) string {
	t.Helper()
	at := auth.NewAccessToken(key, secret)
	at.SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room}).
		SetIdentity(identity).SetName(identity).SetKind(kind).SetAttributes(attrs).
		SetValidFor(time.Hour)
	tok, err := at.ToJWT()
	if err != nil {
		t.Fatalf("mint token: %v", err)
	}
	return tok
}
