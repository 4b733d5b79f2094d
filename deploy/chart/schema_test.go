package chart

import (
	"strings"
	"testing"
)

// set builds a nested override from a dotted path.
func set(path string, v any) map[string]any {
	parts := strings.Split(path, ".")
	out := map[string]any{parts[len(parts)-1]: v}
	for i := len(parts) - 2; i >= 0; i-- {
		out = map[string]any{parts[i]: out}
	}
	return out
}

// TestSchemaRejectsBadValues: values.schema.json (and the chart's own
// checks) refuse values that would deploy a broken or unsafe fleet, with an
// error naming the value.
func TestSchemaRejectsBadValues(t *testing.T) {
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		values map[string]any
		want   string // a piece of the error
	}{
		{"one control plane", set("controlplane.replicas", 1), "replicas"},
		{"negative workers", set("worker.replicas", -1), "replicas"},
		{"no slots", set("worker.slotsPerGPU", 0), "slotsPerGPU"},
		{"slots word", set("worker.slotsPerGPU", "many"), "slotsPerGPU"},
		{"gpus word", set("worker.gpus", "two"), "gpus"},
		{"no GPU asked", set("worker.gpusPerNode", 0), "gpusPerNode"},
		{"relative CUDA library path", set("worker.cudaLibraries.hostPath", "usr/lib"), "hostPath"},
		{"plaintext NATS", set("nats.url", "nats://nats:4222"), "url"},
		{"plaintext etcd", set("etcd.endpoints", []any{"http://etcd:2379"}), "endpoints"},
		{"unknown value", set("worker.replicaz", 3), "replicaz"},
		{"privileged port", set("worker.mediaPort", 80), "mediaPort"},
		{"drain grace too short", set("worker.terminationGraceMarginSeconds", 0), "terminationGraceMarginSeconds"},
		{"unknown public IP mode", set("worker.publicIP.mode", "guess"), "mode"},
		{"init container without image", set("worker.publicIP.mode", "initContainer"), "image"},
		{"hostPort without an address", map[string]any{"worker": map[string]any{"hostNetwork": false, "publicIP": map[string]any{"mode": "none"}}}, "mode"},
		{"GPU limit overridden", set("worker.resources.limits", map[string]any{"nvidia.com/gpu": 0}), "limits"},
		{"ingress without host", set("controlplane.ingress.enabled", true), "host"},
		{"too many ICE servers", set("worker.iceServers", []any{"stun:a:1", "stun:b:1", "stun:c:1", "stun:d:1", "stun:e:1", "stun:f:1", "stun:g:1", "stun:h:1", "stun:i:1"}), "iceServers"},
		{"bad placement policy", set("controlplane.placementPolicy", "random"), "placementPolicy"},
		{"fleet TLS secret missing", set("fleetTLS.existingSecret", ""), "existingSecret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Render(ch, "avatarfleet", testNamespace, c.values)
			if err == nil {
				t.Fatalf("values %v were accepted", c.values)
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not name %q: %v", c.want, err)
			}
		})
	}
	// the chart's own checks, across values
	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"worker": map[string]any{"replicas": 5, "maxReplicas": 4}}, "worker.maxReplicas"},
		{map[string]any{"controlplane": map[string]any{"hpa": map[string]any{"minReplicas": 5, "maxReplicas": 4}}}, "hpa.maxReplicas"},
		{map[string]any{"controlplane": map[string]any{"replicas": 2, "pdb": map[string]any{"minAvailable": 2}}}, "pdb.minAvailable"},
	} {
		_, err := Render(ch, "avatarfleet", testNamespace, c.values)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an error naming %s, got %v", c.values, c.want, err)
		}
	}
	// and good overrides pass, so the refusals above are about the values
	for _, slots := range []any{4, "auto"} {
		if _, err := Render(ch, "avatarfleet", testNamespace, set("worker.slotsPerGPU", slots)); err != nil {
			t.Errorf("slotsPerGPU %v was refused: %v", slots, err)
		}
	}
}
