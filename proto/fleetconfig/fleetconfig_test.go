package fleetconfig

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestEnvName(t *testing.T) {
	if got := EnvName("slots-per-gpu"); got != "AVATARFLEET_SLOTS_PER_GPU" {
		t.Fatal(got)
	}
}

func TestParsePrecedence(t *testing.T) {
	type cfg struct {
		listen string
		n      int
		on     bool
		d      time.Duration
	}
	newFS := func(c *cfg) *flag.FlagSet {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(new(bytes.Buffer))
		fs.StringVar(&c.listen, "grpc-listen", "127.0.0.1:9090", "")
		fs.IntVar(&c.n, "slots-per-gpu", 1, "")
		fs.BoolVar(&c.on, "fleet-insecure", false, "")
		fs.DurationVar(&c.d, "lease-ttl", time.Second, "")
		return fs
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    cfg
		wantErr string
	}{
		{"defaults", nil, nil, cfg{"127.0.0.1:9090", 1, false, time.Second}, ""},
		{"env fills", nil, map[string]string{"AVATARFLEET_GRPC_LISTEN": "10.0.0.1:1", "AVATARFLEET_SLOTS_PER_GPU": "3", "AVATARFLEET_FLEET_INSECURE": "true", "AVATARFLEET_LEASE_TTL": "2s"},
			cfg{"10.0.0.1:1", 3, true, 2 * time.Second}, ""},
		{"flag wins", []string{"--grpc-listen", "10.0.0.2:2", "--slots-per-gpu=4"}, map[string]string{"AVATARFLEET_GRPC_LISTEN": "10.0.0.1:1", "AVATARFLEET_SLOTS_PER_GPU": "3"},
			cfg{"10.0.0.2:2", 4, false, time.Second}, ""},
		{"empty env is unset", nil, map[string]string{"AVATARFLEET_GRPC_LISTEN": ""}, cfg{"127.0.0.1:9090", 1, false, time.Second}, ""},
		{"bad env value names the variable", nil, map[string]string{"AVATARFLEET_SLOTS_PER_GPU": "many"}, cfg{}, "AVATARFLEET_SLOTS_PER_GPU"},
		{"stray argument", []string{"x"}, nil, cfg{}, "unexpected"},
		{"unknown flag", []string{"--nope"}, nil, cfg{}, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cfg
			err := Parse(newFS(&c), tt.args, envOf(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || c != tt.want {
				t.Fatalf("got %+v (%v), want %+v", c, err, tt.want)
			}
		})
	}
	var c cfg
	if err := Parse(newFS(&c), []string{"-h"}, envOf(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

func TestLinks(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw, empty, ca := file("pw", "secret\n"), file("empty", "\n"), file("ca.pem", "x")

	l := Links{EtcdCA: ca, EtcdUsername: "cp", EtcdPasswordFile: pw}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := l.Etcd([]string{"etcd-0:2379", "https://etcd-1:2379"}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Endpoints, []string{"https://etcd-0:2379", "https://etcd-1:2379"}) || e.Password != "secret" || e.TLS.CAFile != ca {
		t.Errorf("etcd config %+v", e)
	}
	n, err := Links{NATSUser: "w"}.NATS("tls://nats:4222", "w1", envOf(map[string]string{NATSPasswordEnv: "np"}))
	if err != nil || n.Password != "np" || n.Name != "w1" {
		t.Errorf("nats config %+v %v", n, err)
	}

	bad := []struct {
		name string
		l    Links
		want string
	}{
		{"fleet partial", Links{FleetCA: ca}, "--fleet-ca, --fleet-cert and --fleet-key"},
		{"fleet missing file", Links{FleetCA: ca, FleetCert: filepath.Join(dir, "no"), FleetKey: ca}, "--fleet-cert"},
		{"etcd cert without key", Links{EtcdCert: ca}, "--etcd-cert and --etcd-key"},
		{"nats key without cert", Links{NATSKey: ca}, "--nats-cert and --nats-key"},
		{"two nats auths", Links{NATSCreds: ca, NATSNKey: ca}, "choose one"},
		{"password file without user", Links{NATSPasswordFile: pw}, "--nats-user"},
		{"a directory", Links{EtcdCA: dir}, "directory"},
	}
	for _, tt := range bad {
		if err := tt.l.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want one mentioning %q", tt.name, err, tt.want)
		}
	}
	if _, err := (Links{EtcdUsername: "u", EtcdPasswordFile: empty}).Etcd([]string{"e:1"}, envOf(nil)); err == nil {
		t.Error("an empty password file was accepted")
	}
	if _, err := (Links{}).Etcd([]string{"e:1"}, envOf(map[string]string{EtcdPasswordEnv: "x"})); err == nil || !strings.Contains(err.Error(), "--etcd-username") {
		t.Errorf("password without user: %v", err)
	}
	if _, err := (Links{EtcdUsername: "u", EtcdPasswordFile: pw}).Etcd([]string{"e:1"}, envOf(map[string]string{EtcdPasswordEnv: "x"})); err == nil {
		t.Error("password file and env both accepted")
	}
}

func TestLog(t *testing.T) {
	var l Log
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	l.AddFlags(fs)
	if err := Parse(fs, []string{"--log-format", "json", "--log-level", "warn"}, envOf(nil)); err != nil || l.Validate() != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	log := l.Logger(&out)
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	if s := out.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"msg":"shown"`) {
		t.Errorf("json warn logger wrote %q", s)
	}
	for _, bad := range []Log{{Level: "loud", Format: "text"}, {Level: "info", Format: "xml"}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}
