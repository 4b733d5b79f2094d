package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestScaleUsageErrors: bad "workers scale" command lines fail with
// ExitUsage before any request.
func TestScaleUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"workers", "scale"}, `--replicas is required`},
		{[]string{"workers", "scale", "3"}, `takes no arguments, got 1`},
		{[]string{"workers", "scale", "--replicas", "-1"}, `--replicas must be within 0..1000, got -1`},
		{[]string{"workers", "scale", "--replicas", "1001"}, `--replicas must be within 0..1000, got 1001`},
		{[]string{"workers", "scale", "--replicas", "two"}, `invalid argument "two" for "--replicas" flag`},
		{[]string{"workers", "scale", "--replicas", "1", "--statefulset", "Workers"}, `--statefulset "Workers": a lowercase RFC 1123 label`},
		{[]string{"workers", "scale", "--replicas", "1", "--statefulset", ""}, `--statefulset ""`},
		{[]string{"workers", "scale", "--replicas", "1", "--statefulset", strings.Repeat("a", 64)}, `must be no more than 63 characters`},
		{[]string{"workers", "scale", "--replicas", "1", "-n", "gpu/x"}, `--namespace "gpu/x"`},
		{[]string{"workers", "scale", "--replicas", "1", "--timeout", "0s"}, `--timeout must be positive`},
		{[]string{"workers", "scale", "--replicas", "1", "--poll-interval", "-1s"}, `--poll-interval must be positive`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			rt := &script{}
			r := runCLI(t, rt, nil, tt.args...)
			if r.code != ExitUsage {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, ExitUsage, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q, want \"error: ...%s...\"", r.stderr, tt.want)
			}
			if rt.count() != 0 {
				t.Errorf("%d requests sent", rt.count())
			}
		})
	}
}

// TestScaleKubeconfigErrors: a kubeconfig that is missing or names no
// cluster fails with ExitError and says so, before the fleet is touched.
func TestScaleKubeconfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"explicit file missing", []string{"--kubeconfig", filepath.Join(dir, "nope")}, nil, "kubeconfig:"},
		{"nothing anywhere", nil, map[string]string{"HOME": dir}, "kubeconfig:"},
		{"$KUBECONFIG names nothing", nil, map[string]string{"KUBECONFIG": filepath.Join(dir, "a") + string(filepath.ListSeparator) + filepath.Join(dir, "b")}, "kubeconfig:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &script{}
			r := runCLI(t, rt, tt.env, append([]string{"workers", "scale", "--replicas", "1"}, tt.args...)...)
			if r.code != ExitError || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, ExitError, tt.want)
			}
			if rt.count() != 0 {
				t.Errorf("%d requests sent to the fleet", rt.count())
			}
		})
	}
}
