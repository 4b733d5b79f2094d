package chart

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/avatarfleet/avatarfleet/deploy/kubetest"
)

// helmConfig is a Helm action configuration against the test's API server,
// releases stored as Secrets in namespace.
func helmConfig(t *testing.T, kubeconfig, namespace string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfig
	flags.Namespace = &namespace
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(io.Discard, nil)))
	if err := cfg.Init(flags, namespace, "secret"); err != nil {
		t.Fatalf("helm configuration: %v", err)
	}
	return cfg
}

// TestInstallIntoAPIServer installs every documented value set into a real
// kube-apiserver (kubetest: the API server and its etcd only; no
// controller-manager, scheduler or kubelet, so the objects are validated,
// admitted and stored, and no pod is ever created), checks that the server
// holds every object of each release, then upgrades one release to another
// worker count and checks the StatefulSet changed while the generated API
// keys were kept.
func TestInstallIntoAPIServer(t *testing.T) {
	cluster := kubetest.Start(t)
	cs := cluster.Clientset(t)
	dyn, err := dynamic.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for i, vs := range valueSets {
		_, vals := loadSet(t, vs)
		if vs.serviceMonitor {
			// the Prometheus Operator's CRD is not installed in the test's API server
			vals["metrics"].(map[string]any)["serviceMonitor"].(map[string]any)["enabled"] = false
		}
		ns := fmt.Sprintf("fleet-%d", i)
		start := time.Now()
		inst := action.NewInstall(helmConfig(t, cluster.Kubeconfig, ns))
		inst.ReleaseName = "avatarfleet"
		inst.Namespace = ns
		inst.CreateNamespace = true
		inst.WaitStrategy = kube.HookOnlyStrategy
		inst.Timeout = time.Minute
		rel, err := inst.RunWithContext(ctx, ch, vals)
		if err != nil {
			t.Fatalf("install %s into %s: %v", vs.file, ns, err)
		}
		r := rel.(*releasev1.Release)
		n := checkStored(ctx, t, dyn, mapper, ns, r.Manifest)
		t.Logf("%s: %d objects accepted and stored in %v", vs.file, n, time.Since(start).Round(time.Millisecond))
	}

	// upgrade the GPU-cluster release: 8 workers → 12
	const ns = "fleet-1"
	if valueSets[1].file != "gpu-cluster-values.yaml" {
		t.Fatal("the table's second value set is no longer the GPU cluster")
	}
	before := secretData(ctx, t, cs, ns, "avatarfleet-api-keys")
	_, vals := loadSet(t, valueSets[1])
	vals["metrics"].(map[string]any)["serviceMonitor"].(map[string]any)["enabled"] = false
	vals["worker"].(map[string]any)["replicas"] = 12
	up := action.NewUpgrade(helmConfig(t, cluster.Kubeconfig, ns))
	up.Namespace = ns
	up.WaitStrategy = kube.HookOnlyStrategy
	up.Timeout = time.Minute
	rel, err := up.RunWithContext(ctx, "avatarfleet", ch, vals)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if r := rel.(*releasev1.Release); r.Version != 2 {
		t.Errorf("release version %d after the upgrade, want 2", r.Version)
	}
	sts, err := cs.AppsV1().StatefulSets(ns).Get(ctx, "avatarfleet-worker", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get the worker StatefulSet: %v", err)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 12 {
		t.Errorf("worker replicas %v after the upgrade, want 12", sts.Spec.Replicas)
	}
	scale, err := cs.AppsV1().StatefulSets(ns).GetScale(ctx, "avatarfleet-worker", metav1.GetOptions{})
	if err != nil || scale.Spec.Replicas != 12 {
		t.Errorf("scale subresource: %v, %v", scale, err)
	}
	after := secretData(ctx, t, cs, ns, "avatarfleet-api-keys")
	if string(before["api-keys.yaml"]) == "" || string(before["api-keys.yaml"]) != string(after["api-keys.yaml"]) {
		t.Error("the generated API keys changed across the upgrade (lookup should keep them)")
	}
}

func secretData(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name string) map[string][]byte {
	t.Helper()
	s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Secret %s/%s: %v", ns, name, err)
	}
	return s.Data
}

// checkStored reads back every object of a release's manifest from the API
// server and returns how many there were.
func checkStored(ctx context.Context, t *testing.T, dyn dynamic.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper, ns, manifest string) int {
	t.Helper()
	n := 0
	for _, doc := range releaseutil.SplitManifests(manifest) {
		o, err := Decode(doc)
		if err != nil {
			t.Fatalf("release manifest: %v", err)
		}
		gv, err := schema.ParseGroupVersion(o.APIVersion)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mapper.RESTMapping(gv.WithKind(o.Kind).GroupKind(), gv.Version)
		if err != nil {
			t.Fatalf("%s %s: no REST mapping: %v", o.Kind, o.Name, err)
		}
		got, err := dyn.Resource(m.Resource).Namespace(ns).Get(ctx, o.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s %s/%s is not stored: %v", o.Kind, ns, o.Name, err)
			continue
		}
		if got.GetLabels()["app.kubernetes.io/instance"] != "avatarfleet" {
			t.Errorf("%s %s/%s lost its labels: %v", o.Kind, ns, o.Name, got.GetLabels())
		}
		n++
	}
	if n == 0 {
		t.Fatalf("release in %s has no objects", ns)
	}
	return n
}
