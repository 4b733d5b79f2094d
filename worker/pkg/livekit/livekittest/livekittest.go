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
	bin := Binary(t)
	s := &Server{}
	s.Log = repotest.StartServer(t, repotest.ServerOptions{
		Name:      "livekit-server",
		Interrupt: true,
		Timeout:   30 * time.Second,
		Command: func() (*exec.Cmd, func() bool) {
			port, tcp, udp := repotest.FreePort(t, "tcp"), repotest.FreePort(t, "tcp"), repotest.FreePort(t, "udp")
			cfgPath := filepath.Join(t.TempDir(), "livekit.yaml")
			if err := os.WriteFile(cfgPath, []byte(config(port, tcp, udp)), 0o600); err != nil {
				t.Fatal(err)
			}
			s.URL, s.HTTP = fmt.Sprintf("ws://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", port)
			return exec.Command(bin, "--config", cfgPath), func() bool { return ready(s.HTTP) }
		},
	})
	return s
}

// config is the server's configuration: loopback only, the test key.
func config(port, tcp, udp int) string {
	return fmt.Sprintf(`port: %d
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
