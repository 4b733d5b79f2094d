package chart

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/avatarfleet/avatarfleet/deploy/kubetest"
)

// inChartStores renders the in-chart etcd and NATS value set.
func inChartStores(t *testing.T) []Object {
	t.Helper()
	var vs valueSet
	for _, v := range valueSets {
		if v.inChartStores {
			vs = v
		}
	}
	dir, vals := loadSet(t, vs)
	ch, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(ch, "avatarfleet", testNamespace, vals)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func named[T any](t *testing.T, objs []Object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o.Typed.(T)
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	var zero T
	return zero
}

// TestInChartNATSConfig loads the rendered nats.conf into the real NATS
// server's configuration parser (nats-server v2.15.2, the release the fleet
// embeds), with the chart-generated server certificate, and checks the
// users: the control plane and one per worker ordinal up to maxReplicas,
// each worker allowed only its own subjects.
func TestInChartNATSConfig(t *testing.T) {
	objs := inChartStores(t)
	cm := named[*corev1.ConfigMap](t, objs, "ConfigMap", "avatarfleet-nats")
	srv := named[*corev1.Secret](t, objs, "Secret", "avatarfleet-nats-server-tls")
	dir := t.TempDir()
	conf := cm.Data["nats.conf"]
	for path, data := range map[string][]byte{
		"/etc/nats/tls/server.crt":      srv.Data["server.crt"],
		"/etc/nats/tls/server.key":      srv.Data["server.key"],
		"/etc/avatarfleet/fleet/ca.crt": srv.Data["ca.crt"], // stands in for the fleet CA: any CA parses
		"/var/lib/nats":                 nil,
	} {
		local := filepath.Join(dir, filepath.Base(path))
		if data != nil {
			if err := os.WriteFile(local, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if !strings.Contains(conf, path) {
			t.Fatalf("nats.conf does not name %s", path)
		}
		conf = strings.ReplaceAll(conf, path, local)
	}
	file := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats-server refuses the chart's nats.conf: %v", err)
	}
	if !opts.JetStream || opts.TLSConfig == nil || !opts.TLSMap {
		t.Errorf("JetStream %v, TLS %v, verify_and_map %v: want all", opts.JetStream, opts.TLSConfig != nil, opts.TLSMap)
	}
	want := 1 + 4 // the control plane and worker.maxReplicas (4 in this value set)
	if len(opts.Users) != want {
		t.Fatalf("%d users, want %d", len(opts.Users), want)
	}
	for _, u := range opts.Users {
		id, ok := strings.CutPrefix(u.Username, "avatarfleet://worker/")
		if !ok {
			if u.Username != "avatarfleet://controlplane" {
				t.Errorf("unexpected user %q", u.Username)
			}
			continue
		}
		if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Response == nil {
			t.Fatalf("worker %s has no publish or response permissions", id)
		}
		for _, s := range u.Permissions.Publish.Allow {
			if strings.HasPrefix(s, "avatarfleet.") && !strings.HasPrefix(s, "avatarfleet.events.workers."+id) {
				t.Errorf("worker %s may publish %s", id, s)
			}
		}
		if !slices.Contains(u.Permissions.Subscribe.Allow, "avatarfleet.health."+id) {
			t.Errorf("worker %s cannot receive its health requests", id)
		}
	}
}

// TestInChartEtcdFlags checks the in-chart etcd's command against the etcd
// binary the kubetest harness built (the release the fleet embeds).
func TestInChartEtcdFlags(t *testing.T) {
	assets, err := kubetest.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	flags := helpFlags(t, filepath.Join(assets, "etcd"), "run `make setup` (scripts/kube-tools.sh builds etcd)")
	sts := named[*appsv1.StatefulSet](t, inChartStores(t), "StatefulSet", "avatarfleet-etcd")
	c := sts.Spec.Template.Spec.Containers[0]
	if c.Command[0] != "etcd" {
		t.Fatalf("etcd command %v", c.Command)
	}
	for _, f := range argFlags(c.Command[1:]) {
		if !flags[f] {
			t.Errorf("etcd is given --%s, which etcd --help does not list", f)
		}
	}
	if cluster, _ := argValue(c.Command, "initial-cluster"); strings.Count(cluster, "=https://") != 3 {
		t.Errorf("--initial-cluster=%s: want 3 TLS members", cluster)
	}
}
