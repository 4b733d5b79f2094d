package cli

import (
	"strings"
	"testing"
)

// TestUsageErrors checks that bad command lines fail with ExitUsage and a
// clear message before any HTTP request.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"bogus"}, nil, `unknown command "bogus" for "avatarctl"`},
		{[]string{"workers", "bogus"}, nil, `unknown command "bogus" for "avatarctl workers"`},
		{[]string{"sessions", "bogus", "x"}, nil, `unknown command "bogus" for "avatarctl sessions"`},
		{[]string{"workers", "list", "extra"}, nil, `"avatarctl workers list" takes no arguments, got 1`},
		{[]string{"workers", "get"}, nil, `takes 1 argument(s) (ID), got 0`},
		{[]string{"workers", "get", "a", "b"}, nil, `takes 1 argument(s) (ID), got 2`},
		{[]string{"workers", "get", ""}, nil, `ID must not be empty`},
		{[]string{"workers", "drain"}, nil, `takes 1 argument(s) (ID), got 0`},
		{[]string{"workers", "undrain", "a", "b"}, nil, `got 2`},
		{[]string{"sessions", "list", "x"}, nil, `takes no arguments, got 1`},
		{[]string{"sessions", "get"}, nil, `got 0`},
		{[]string{"sessions", "delete"}, nil, `got 0`},
		{[]string{"sessions", "delete", "a", "b"}, nil, `got 2`},
		{[]string{"sessions", "create", "alice"}, nil, `takes no arguments, got 1`},
		{[]string{"-o", "yaml", "workers", "list"}, nil, `invalid argument "yaml" for "-o, --output" flag: must be "table" or "json"`},
		{[]string{"workers", "list", "--output=wide"}, nil, `must be "table" or "json"`},
		{[]string{"workers", "list", "--nope"}, nil, `unknown flag: --nope`},
		{[]string{"workers", "drain", "w1", "--wait", "--timeout", "soon"}, nil, `invalid argument "soon" for "--timeout" flag`},
		{[]string{"workers", "drain", "w1", "--wait", "--timeout", "0s"}, nil, `--timeout must be positive`},
		{[]string{"workers", "drain", "w1", "--wait", "--timeout", "-1m"}, nil, `--timeout must be positive`},
		{[]string{"workers", "drain", "w1", "--wait", "--poll-interval", "0"}, nil, `--poll-interval must be positive`},
		{[]string{"workers", "drain", "w1", "--timeout", "1m"}, nil, `--timeout and --poll-interval need --wait`},
		{[]string{"sessions", "create", "--idle-timeout", "10"}, nil, `invalid argument "10" for "--idle-timeout" flag`},
		{[]string{"sessions", "create", "--idle-timeout", "1500ms"}, nil, `--idle-timeout: must be whole seconds`},
		{[]string{"sessions", "create", "--max-duration", "0s"}, nil, `--max-duration: must be positive`},
		{[]string{"sessions", "create", "--restart-policy", "always"}, nil, `--restart-policy: want on_worker_lost or never`},
		{[]string{"sessions", "create", "--replace-timeout", "1500ms"}, nil, `--replace-timeout: must be whole seconds`},
		{[]string{"sessions", "create", "--max-duration", "-5m"}, nil, `--max-duration: must be positive`},
		{[]string{"sessions", "create", "--max-duration", "1000000h"}, nil, `--max-duration: 1000000h0m0s is too long`},
		{[]string{"sessions", "create", "--label", "novalue"}, nil, `--label: "novalue" is not key=value`},
		{[]string{"sessions", "create", "--label", "=v"}, nil, `--label: "=v" is not key=value`},
		{[]string{"sessions", "create", "--label", "a=1", "--label", "a=2"}, nil, `--label: key "a" given twice`},
		{[]string{"sessions", "create", "--idempotency-key", ""}, nil, `--idempotency-key must not be empty`},
		{[]string{"sessions", "create", "--livekit-url", "wss://lk.example.com"}, nil, `--livekit-url and --livekit-token-file go together`},
		{[]string{"sessions", "create", "--livekit-token-file", "/nonexistent"}, nil, `--livekit-url and --livekit-token-file go together`},
		{[]string{"sessions", "create", "--livekit-url", "wss://lk.example.com", "--livekit-token-file", "/nonexistent/token"}, nil, `--livekit-token-file: open /nonexistent/token`},
		{[]string{"--url", "127.0.0.1:8080", "sessions", "list"}, nil, `bad control plane URL`},
		{[]string{"sessions", "list"}, map[string]string{EnvURL: "ftp://h"}, `bad control plane URL`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			rt := &script{}
			r := runCLI(t, rt, tt.env, tt.args...)
			if r.code != ExitUsage {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, ExitUsage, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q, want \"error: ...%s...\"", r.stderr, tt.want)
			}
			if !strings.Contains(r.stderr, "--help' for usage.") {
				t.Errorf("stderr %q does not point to --help", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			if n := rt.count(); n != 0 {
				t.Errorf("%d HTTP requests sent, want none", n)
			}
		})
	}
}

// TestHelp checks that help goes to stdout and succeeds.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"workers"}, {"sessions", "--help"}, {"workers", "drain", "-h"}, {"help", "sessions"}} {
		rt := &script{}
		r := runCLI(t, rt, nil, args...)
		if r.code != ExitOK || !strings.Contains(r.stdout, "Usage:") || r.stderr != "" || rt.count() != 0 {
			t.Errorf("%q: code %d stdout %q stderr %q requests %d", args, r.code, r.stdout, r.stderr, rt.count())
		}
	}
	r := runCLI(t, &script{}, nil, "workers", "drain", "--help")
	if strings.Contains(r.stdout, "poll-interval") {
		t.Error("--poll-interval should be hidden")
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels([]string{"team=a", "note=x=y", "empty="})
	if err != nil || len(got) != 3 || got["note"] != "x=y" || got["empty"] != "" {
		t.Fatalf("parseLabels: %v %v", got, err)
	}
	if got, err := parseLabels(nil); got != nil || err != nil {
		t.Fatalf("no labels: %v %v", got, err)
	}
}
