package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(config) bool
		wantErr string
	}{
		{"defaults", nil, nil, func(c config) bool {
			return c.listen == ":8080" && c.etcd == "" && c.nats == "" && c.dataDir == ".avatarfleet" &&
				c.embeddedEtcdListen == "127.0.0.1:2379" && c.embeddedNATSAddr == "127.0.0.1:4222"
		}, ""},
		{"env sets a flag", nil, map[string]string{"AVATARFLEET_LISTEN": "127.0.0.1:9999", "AVATARFLEET_EMBEDDED_ETCD_LISTEN": "127.0.0.1:3379"},
			func(c config) bool { return c.listen == "127.0.0.1:9999" && c.embeddedEtcdListen == "127.0.0.1:3379" }, ""},
		{"flag wins over env", []string{"--listen", ":7000"}, map[string]string{"AVATARFLEET_LISTEN": ":9999"},
			func(c config) bool { return c.listen == ":7000" }, ""},
		{"durations", []string{"--viewer-token-ttl", "2h"}, nil, func(c config) bool { return c.viewerTokenTTL == 2*time.Hour }, ""},
		{"quota defaults", nil, nil, func(c config) bool {
			return c.limits.MaxSessions == 100 && c.limits.Rate == 100 && c.limits.Burst == 200 && c.limits.MaxEventStreams == 8 &&
				c.limits.MaxPendingViewers == 10 && c.limits.MaxPendingViewersPerToken == 5
		}, ""},
		{"quota flags", []string{"--default-max-sessions", "3", "--default-rate", "0.5", "--default-burst", "2", "--default-max-streams", "1", "--default-max-pending-viewers", "4"},
			map[string]string{"AVATARFLEET_DEFAULT_MAX_STREAMS": "9"}, func(c config) bool {
				return c.limits.MaxSessions == 3 && c.limits.Rate == 0.5 && c.limits.Burst == 2 && c.limits.MaxEventStreams == 1 &&
					c.limits.MaxPendingViewers == 4 && c.limits.MaxPendingViewersPerToken == 4
			}, ""},
		{"negative quota", []string{"--default-max-sessions", "-1"}, nil, nil, "max_sessions"},
		{"bad listen", []string{"--listen", "nonsense"}, nil, nil, "--listen"},
		{"short token ttl", []string{"--viewer-token-ttl", "1s"}, nil, nil, "--viewer-token-ttl"},
		{"tls files", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--token-keys-file", "t.yaml"}, nil,
			func(c config) bool { return c.tlsCert == "c.pem" && c.tlsKey == "k.pem" && c.tokenKeysFile == "t.yaml" }, ""},
		{"tls cert without key", []string{"--tls-cert", "c.pem"}, nil, nil, "--tls-key"},
		{"unknown flag", []string{"--bogus"}, nil, nil, "bogus"},
		{"stray argument", []string{"extra"}, nil, nil, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := parseFlags(tt.args)
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

// Without AVATARFLEET_API_KEY or a keys file, a key is made once, kept in
// the data dir with owner-only permissions, and reused on the next start.
func TestLoadKeysGeneratesOnce(t *testing.T) {
	t.Setenv("AVATARFLEET_API_KEY", "")
	dir := t.TempDir()
	keys, shown, err := loadKeys(config{dataDir: dir})
	if err != nil || keys.Len() != 1 || shown == "" {
		t.Fatalf("first start: %v %v %q", keys, err, shown)
	}
	info, err := os.Stat(filepath.Join(dir, "api-key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}
	_, again, err := loadKeys(config{dataDir: dir})
	if err != nil || again != shown {
		t.Fatalf("second start made another key: %q vs %q (%v)", again, shown, err)
	}
	if _, err := keys.Authenticate(shown); err != nil {
		t.Fatalf("generated key does not authenticate: %v", err)
	}
	t.Setenv("AVATARFLEET_API_KEY", "short")
	if _, _, err := loadKeys(config{dataDir: dir}); err == nil {
		t.Fatal("a too-short AVATARFLEET_API_KEY was accepted")
	}
}

// Without --token-keys-file, a token key is made once in the data dir and
// reused; a given file is read as is, and a bad one is an error.
func TestLoadTokenKeys(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	first, err := loadTokenKeys(config{dataDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	again, err := loadTokenKeys(config{dataDir: dir}, log)
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
	if _, err := loadTokenKeys(config{dataDir: dir, tokenKeysFile: bad}, log); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("bad file: %v", err)
	}
}
