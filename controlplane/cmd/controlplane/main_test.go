package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(Config) bool
		wantErr string
	}{
		{"defaults", nil, nil, func(c Config) bool {
			return c.Listen == ":8080" && c.Etcd == "" && c.NATS == "" && c.DataDir == ".avatarfleet" &&
				c.EmbeddedEtcdListen == "127.0.0.1:2379" && c.EmbeddedNATSListen == "127.0.0.1:4222" &&
				c.Log.Level == "info" && c.Log.Format == "text" && !c.Links.FleetInsecure && c.Embedded()
		}, ""},
		{"env sets a flag", nil, map[string]string{"AVATARFLEET_LISTEN": "127.0.0.1:9999", "AVATARFLEET_EMBEDDED_ETCD_LISTEN": "127.0.0.1:3379"},
			func(c Config) bool { return c.Listen == "127.0.0.1:9999" && c.EmbeddedEtcdListen == "127.0.0.1:3379" }, ""},
		{"flag wins over env", []string{"--listen", ":7000"}, map[string]string{"AVATARFLEET_LISTEN": ":9999"},
			func(c Config) bool { return c.Listen == ":7000" }, ""},
		{"env bool and log format", nil, map[string]string{"AVATARFLEET_FLEET_INSECURE": "true", "AVATARFLEET_LOG_FORMAT": "json"},
			func(c Config) bool { return c.Links.FleetInsecure && c.Log.Format == "json" }, ""},
		{"durations", []string{"--viewer-token-ttl", "2h"}, nil, func(c Config) bool { return c.ViewerTokenTTL == 2*time.Hour }, ""},
		{"bad listen", []string{"--listen", "nonsense"}, nil, nil, "--listen"},
		{"short token ttl", []string{"--viewer-token-ttl", "1s"}, nil, nil, "--viewer-token-ttl"},
		{"bad policy", []string{"--placement-policy", "random"}, nil, nil, "--placement-policy"},
		{"bad log format", []string{"--log-format", "xml"}, nil, nil, "--log-format"},
		{"bad log level from env", nil, map[string]string{"AVATARFLEET_LOG_LEVEL": "loud"}, nil, "--log-level"},
		{"bad env value", nil, map[string]string{"AVATARFLEET_HEALTH_FAILURES": "many"}, nil, "AVATARFLEET_HEALTH_FAILURES"},
		{"fleet files go together", []string{"--fleet-ca", "ca.crt"}, nil, nil, "--fleet-ca, --fleet-cert and --fleet-key"},
		{"missing fleet file", []string{"--fleet-ca", "/nonexistent/ca", "--fleet-cert", "/nonexistent/c", "--fleet-key", "/nonexistent/k"}, nil, nil, "--fleet-ca"},
		{"etcd cert needs key", []string{"--etcd-cert", "c.pem"}, nil, nil, "--etcd-cert and --etcd-key"},
		{"one nats auth", []string{"--nats-user", "u", "--nats-nkey", "k"}, nil, nil, "choose one"},
		{"quota defaults", nil, nil, func(c Config) bool {
			return c.Limits.MaxSessions == 100 && c.Limits.Rate == 100 && c.Limits.Burst == 200 && c.Limits.MaxEventStreams == 8 &&
				c.Limits.MaxPendingViewers == 10 && c.Limits.MaxPendingViewersPerToken == 5
		}, ""},
		{"quota flags", []string{"--default-max-sessions", "3", "--default-rate", "0.5", "--default-burst", "2", "--default-max-streams", "1", "--default-max-pending-viewers", "4"},
			map[string]string{"AVATARFLEET_DEFAULT_MAX_STREAMS": "9"}, func(c Config) bool {
				return c.Limits.MaxSessions == 3 && c.Limits.Rate == 0.5 && c.Limits.Burst == 2 && c.Limits.MaxEventStreams == 1 &&
					c.Limits.MaxPendingViewers == 4 && c.Limits.MaxPendingViewersPerToken == 4
			}, ""},
		{"negative quota", []string{"--default-max-sessions", "-1"}, nil, nil, "max_sessions"},
		{"tls files", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--token-keys-file", "t.yaml"}, nil,
			func(c Config) bool {
				return c.TLSCertFile == "c.pem" && c.TLSKeyFile == "k.pem" && c.TokenKeysFile == "t.yaml"
			}, ""},
		{"tls cert without key", []string{"--tls-cert", "c.pem"}, nil, nil, "--tls-key"},
		{"webhook defaults", nil, nil, func(c Config) bool {
			return c.WebhookMaxAttempts == 10 && c.WebhookRetryInitial == 5*time.Second && c.WebhookRetryMax == time.Hour && c.WebhookTimeout == 10*time.Second
		}, ""},
		{"webhook flags", []string{"--webhook-max-attempts", "3", "--webhook-retry-initial", "1s", "--webhook-timeout", "2s"},
			map[string]string{"AVATARFLEET_WEBHOOK_RETRY_MAX": "1m"}, func(c Config) bool {
				return c.WebhookMaxAttempts == 3 && c.WebhookRetryInitial == time.Second && c.WebhookRetryMax == time.Minute && c.WebhookTimeout == 2*time.Second
			}, ""},
		{"no webhook attempts", []string{"--webhook-max-attempts", "0"}, nil, nil, "--webhook-max-attempts"},
		{"webhook retry max below initial", []string{"--webhook-retry-initial", "1m", "--webhook-retry-max", "1s"}, nil, nil, "--webhook-retry-max"},
		{"test hook off by default", nil, nil, func(c Config) bool { return c.TestHookMarkDelay == 0 }, ""},
		{"test hook from env", nil, map[string]string{TestHookMarkDelayEnv: "90s"}, func(c Config) bool { return c.TestHookMarkDelay == 90*time.Second }, ""},
		{"test hook not a duration", nil, map[string]string{TestHookMarkDelayEnv: "soon"}, nil, TestHookMarkDelayEnv},
		{"test hook negative", nil, map[string]string{TestHookMarkDelayEnv: "-1s"}, nil, TestHookMarkDelayEnv},
		{"test hook too long", nil, map[string]string{TestHookMarkDelayEnv: "11m"}, nil, TestHookMarkDelayEnv},
		{"unknown flag", []string{"--bogus"}, nil, nil, "bogus"},
		{"stray argument", []string{"extra"}, nil, nil, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig(tt.args, envOf(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

// --help lists the new flags and the environment rule, and is not an error.
func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if _, err := ParseConfig([]string{"--help"}, envOf(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"AVATARFLEET_", "-fleet-ca", "-fleet-insecure", "-etcd-username", "-nats-creds", "-log-format", "-listen"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// The embedded default makes a development PKI once and reuses it; an
// external fleet without certificates is refused unless --fleet-insecure.
func TestFleetMaterial(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	c, err := ParseConfig([]string{"--data-dir", dir}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := fleetMaterial(c, log)
	if err != nil || m == nil {
		t.Fatalf("embedded default: %v %v", m, err)
	}
	uris, _ := m.URIs()
	if len(uris) != 1 || uris[0] != fleetpki.ControlPlaneURI {
		t.Errorf("control-plane certificate names %v", uris)
	}
	if st, err := os.Stat(filepath.Join(dir, "pki", "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", st, err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if _, err := fleetMaterial(c, log); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if !bytes.Equal(before, after) {
		t.Error("second start made another CA")
	}

	ext, err := ParseConfig([]string{"--data-dir", t.TempDir(), "--etcd", "http://127.0.0.1:2379", "--nats", "nats://127.0.0.1:4222"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fleetMaterial(ext, log); err == nil || !strings.Contains(err.Error(), "--fleet-insecure") {
		t.Fatalf("external fleet without certificates: %v, want refused", err)
	}
	ext.Links.FleetInsecure = true
	if m, err := fleetMaterial(ext, log); err != nil || m != nil {
		t.Fatalf("--fleet-insecure: %v %v", m, err)
	}
	ext.Links.FleetCA, ext.Links.FleetCert, ext.Links.FleetKey = filepath.Join(dir, "pki", "ca.crt"), filepath.Join(dir, "pki", "controlplane.crt"), filepath.Join(dir, "pki", "controlplane.key")
	if m, err := fleetMaterial(ext, log); err != nil || m == nil {
		t.Fatalf("explicit files: %v %v", m, err)
	}
	// A worker's certificate is no control plane's.
	ca, err := fleetpki.LoadCA(filepath.Join(dir, "pki", "ca.crt"), filepath.Join(dir, "pki", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(fleetpki.Request{WorkerID: "w1"})
	if err != nil || is.WriteFiles(dir, "w1") != nil {
		t.Fatal(err)
	}
	ext.Links.FleetCert, ext.Links.FleetKey = filepath.Join(dir, "w1.crt"), filepath.Join(dir, "w1.key")
	if _, err := fleetMaterial(ext, log); err == nil || !strings.Contains(err.Error(), fleetpki.ControlPlaneURI) {
		t.Fatalf("a worker certificate for the control plane: %v, want refused", err)
	}
}

// Without AVATARFLEET_API_KEY or a keys file, a key is made once, kept in
// the data dir with owner-only permissions, and reused on the next start.
func TestLoadKeysGeneratesOnce(t *testing.T) {
	t.Setenv("AVATARFLEET_API_KEY", "")
	dir := t.TempDir()
	keys, shown, err := loadKeys(Config{DataDir: dir})
	if err != nil || keys.Len() != 1 || shown == "" {
		t.Fatalf("first start: %v %v %q", keys, err, shown)
	}
	info, err := os.Stat(filepath.Join(dir, "api-key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}
	_, again, err := loadKeys(Config{DataDir: dir})
	if err != nil || again != shown {
		t.Fatalf("second start made another key: %q vs %q (%v)", again, shown, err)
	}
	if _, err := keys.Authenticate(shown); err != nil {
		t.Fatalf("generated key does not authenticate: %v", err)
	}
	t.Setenv("AVATARFLEET_API_KEY", "short")
	if _, _, err := loadKeys(Config{DataDir: dir}); err == nil {
		t.Fatal("a too-short AVATARFLEET_API_KEY was accepted")
	}
}

// Without --token-keys-file, a token key is made once in the data dir and
// reused; a given file is read as is, and a bad one is an error.
func TestLoadTokenKeys(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	first, err := loadTokenKeys(Config{DataDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	again, err := loadTokenKeys(Config{DataDir: dir}, log)
	if err != nil || again.Signing().ID != first.Signing().ID {
		t.Fatalf("second start: %v, %v", again, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "token-keys.yaml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keys file: %v %v", fi, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("keys:\n- id: k\n  secret: c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTokenKeys(Config{DataDir: dir, TokenKeysFile: bad}, log); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("bad file: %v", err)
	}
}
