package chart

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
)

const testNamespace = "avatars"

// valueSet is one documented value set (ci/*.yaml, each described in
// deploy/README.md) and what rendering it must give.
type valueSet struct {
	file           string
	workers        int32
	gpus           int64 // nvidia.com/gpu per worker
	drainSeconds   int64
	hostNetwork    bool
	serviceMonitor bool
	inChartStores  bool
	initContainer  bool
	cudaLibraries  string // node directory mounted at /opt/cuda/lib, or ""
}

var valueSets = []valueSet{
	{file: "default-values.yaml", workers: 2, gpus: 1, drainSeconds: 300, hostNetwork: true},
	{file: "gpu-cluster-values.yaml", workers: 8, gpus: 2, drainSeconds: 900, hostNetwork: true, serviceMonitor: true,
		cudaLibraries: "/usr/local/cuda-13/lib64"},
	{file: "in-chart-stores-values.yaml", workers: 3, gpus: 1, drainSeconds: 120, hostNetwork: true, inChartStores: true},
	{file: "referenced-secrets-values.yaml", workers: 2, gpus: 1, drainSeconds: 60, hostNetwork: false, initContainer: true},
}

func loadSet(t *testing.T, vs valueSet) (string, map[string]any) {
	t.Helper()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	vals, err := ReadValues(filepath.Join(dir, "ci", vs.file))
	if err != nil {
		t.Fatal(err)
	}
	return dir, vals
}

// TestEveryValueSetIsListed keeps the table and ci/ in step.
func TestEveryValueSetIsListed(t *testing.T) {
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, vs := range valueSets {
		listed[vs.file] = true
	}
	if len(files) != len(valueSets) {
		t.Errorf("ci/ holds %d value sets, the table %d", len(files), len(valueSets))
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("value set %s is not in the test's table", filepath.Base(f))
		}
	}
}

func TestLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.file, func(t *testing.T) {
			dir, vals := loadSet(t, vs)
			l := action.NewLint()
			l.Strict = true
			l.Namespace = testNamespace
			res := l.Run([]string{dir}, vals)
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
			}
			if len(res.Errors) > 0 {
				t.Fatalf("lint %s: %v", vs.file, res.Errors)
			}
		})
	}
}

func TestRenderInvariants(t *testing.T) {
	workerFlags := flagsOf(t, "worker")
	cpFlags := flagsOf(t, "controlplane")
	for _, vs := range valueSets {
		t.Run(vs.file, func(t *testing.T) {
			dir, vals := loadSet(t, vs)
			ch, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Render(ch, "avatarfleet", testNamespace, vals)
			if err != nil {
				t.Fatal(err)
			}
			external := map[string]bool{}
			merged, err := Values(ch, "avatarfleet", testNamespace, vals)
			if err != nil {
				t.Fatal(err)
			}
			v, err := merged.Table("Values")
			if err != nil {
				t.Fatal(err)
			}
			externalSecrets(v.AsMap(), external)
			if err := checkReferences(objs, external); err != nil {
				t.Error(err)
			}
			for _, o := range objs {
				if ps := o.PodSpec(); ps != nil {
					if err := checkSecurity(o, ps); err != nil {
						t.Error(err)
					}
				}
			}
			checkWorker(t, vs, objs, workerFlags)
			checkControlPlane(t, objs, cpFlags)
			if got := len(find(objs, "ServiceMonitor")); (got > 0) != vs.serviceMonitor {
				t.Errorf("%d ServiceMonitors, want them: %v", got, vs.serviceMonitor)
			}
			if got := len(find(objs, "StatefulSet")); got != map[bool]int{true: 3, false: 1}[vs.inChartStores] {
				t.Errorf("%d StatefulSets (in-chart etcd and NATS: %v)", got, vs.inChartStores)
			}
			dash := false
			for _, o := range find(objs, "ConfigMap") {
				if d := o.Typed.(*corev1.ConfigMap).Data["avatarfleet.json"]; d != "" {
					dash = strings.HasPrefix(strings.TrimSpace(d), "{")
				}
			}
			if !dash {
				t.Error("no dashboard ConfigMap with dashboards/avatarfleet.json")
			}
		})
	}
}

func checkWorker(t *testing.T, vs valueSet, objs []Object, flags map[string]bool) {
	t.Helper()
	var sts *appsv1.StatefulSet
	for _, o := range find(objs, "StatefulSet") {
		if componentOf(o) == "worker" {
			sts = o.Typed.(*appsv1.StatefulSet)
		}
	}
	if sts == nil {
		t.Fatal("no worker StatefulSet")
	}
	if sts.Name != "avatarfleet-worker" {
		t.Errorf("worker StatefulSet is %q, want avatarfleet-worker (avatarctl workers scale relies on it)", sts.Name)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != vs.workers {
		t.Errorf("worker replicas %v, want %d", sts.Spec.Replicas, vs.workers)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q, want Parallel", sts.Spec.PodManagementPolicy)
	}
	ps := &sts.Spec.Template.Spec
	aa := ps.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != "kubernetes.io/hostname" {
		t.Error("workers lack the required one-per-node anti-affinity")
	}
	if ps.HostNetwork != vs.hostNetwork {
		t.Errorf("hostNetwork %v, want %v", ps.HostNetwork, vs.hostNetwork)
	}
	if ps.HostNetwork && ps.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork with dnsPolicy %q: cluster names would not resolve", ps.DNSPolicy)
	}
	c := container(ps, "worker")
	checkCUDALibraries(t, vs, ps, c)
	if c == nil {
		t.Fatal("no worker container")
	}
	for _, r := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
		q, ok := r["nvidia.com/gpu"]
		if !ok || q.Value() != vs.gpus {
			t.Errorf("nvidia.com/gpu %v, want %d in limits and requests", q.String(), vs.gpus)
		}
	}
	for _, f := range argFlags(c.Args) {
		if !flags[f] {
			t.Errorf("worker is given --%s, which bin/worker does not have", f)
		}
	}
	if id, _ := argValue(c.Args, "id"); id != "$(POD_NAME)" {
		t.Errorf("--id=%q, want the pod name", id)
	}
	podName := false
	for _, e := range c.Env {
		if e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			podName = true
		}
	}
	if !podName {
		t.Error("POD_NAME is not the downward API's metadata.name")
	}
	if v, _ := argValue(c.Args, "gpus"); v == "" {
		t.Error("no --gpus")
	}
	if v, _ := argValue(c.Args, "slots-per-gpu"); v == "" {
		t.Error("no --slots-per-gpu")
	}
	// the one UDP media port, on the node (hostNetwork or hostPort)
	mp, _ := argValue(c.Args, "media-port")
	udp := 0
	for _, p := range c.Ports {
		if p.Protocol == corev1.ProtocolUDP {
			udp++
			if strconv.Itoa(int(p.ContainerPort)) != mp {
				t.Errorf("UDP port %d, --media-port %s", p.ContainerPort, mp)
			}
			if !ps.HostNetwork && p.HostPort != p.ContainerPort {
				t.Errorf("without hostNetwork the media port needs hostPort %d, has %d", p.ContainerPort, p.HostPort)
			}
		}
	}
	if udp != 1 {
		t.Errorf("%d UDP ports, want exactly one", udp)
	}
	// the public address
	pub, hasPub := argValue(c.Args, "public-ip")
	switch {
	case vs.initContainer:
		if hasPub || len(ps.InitContainers) != 1 || !strings.Contains(strings.Join(c.Command, " "), "--public-ip=") {
			t.Error("initContainer mode: the init container's address must reach --public-ip through the command")
		}
	case pub != "$(HOST_IP)":
		t.Errorf("--public-ip=%q, want $(HOST_IP) (status.hostIP)", pub)
	}
	// drain: preStop, grace period >= drain timeout
	d, _ := argValue(c.Args, "drain-timeout")
	if d != fmt.Sprintf("%ds", vs.drainSeconds) {
		t.Errorf("--drain-timeout=%s, want %ds", d, vs.drainSeconds)
	}
	if ps.TerminationGracePeriodSeconds == nil || *ps.TerminationGracePeriodSeconds < vs.drainSeconds+10 {
		t.Errorf("terminationGracePeriodSeconds %v below the drain (%ds) plus 10s to exit", ps.TerminationGracePeriodSeconds, vs.drainSeconds)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil ||
		!strings.Contains(strings.Join(c.Lifecycle.PreStop.Exec.Command, " "), "kill -TERM 1") {
		t.Error("worker has no preStop hook that starts the drain")
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.StartupProbe == nil {
		t.Error("worker lacks a probe")
	}
}

func checkControlPlane(t *testing.T, objs []Object, flags map[string]bool) {
	t.Helper()
	var dep *appsv1.Deployment
	for _, o := range find(objs, "Deployment") {
		if componentOf(o) == "controlplane" {
			dep = o.Typed.(*appsv1.Deployment)
		}
	}
	if dep == nil {
		t.Fatal("no control-plane Deployment")
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("control-plane replicas %v, want >= 2", dep.Spec.Replicas)
	}
	ps := &dep.Spec.Template.Spec
	if ps.Affinity == nil || ps.Affinity.PodAntiAffinity == nil {
		t.Error("control plane without anti-affinity")
	}
	c := container(ps, "controlplane")
	if c == nil {
		t.Fatal("no controlplane container")
	}
	for _, f := range argFlags(c.Args) {
		if !flags[f] {
			t.Errorf("control plane is given --%s, which bin/controlplane does not have", f)
		}
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("control plane liveness is not GET /healthz")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("control plane readiness is not GET /readyz")
	}
	if len(find(objs, "PodDisruptionBudget")) < 2 {
		t.Error("want PodDisruptionBudgets for the control plane and the workers")
	}
	hpas := find(objs, "HorizontalPodAutoscaler")
	if len(hpas) != 1 {
		t.Fatalf("%d HPAs, want 1", len(hpas))
	}
	h := hpas[0].Typed.(*autoscalingv2.HorizontalPodAutoscaler)
	if h.Spec.ScaleTargetRef.Name != dep.Name || h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
		t.Errorf("HPA targets %q from %v replicas", h.Spec.ScaleTargetRef.Name, h.Spec.MinReplicas)
	}
	cpu := false
	for _, m := range h.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource.Name == corev1.ResourceCPU {
			cpu = true
		}
	}
	if !cpu {
		t.Error("HPA does not scale on CPU")
	}
}

// checkCUDALibraries: the node's CUDA libraries, when a value set names
// them, reach the worker read-only at /opt/cuda/lib (the CUDA image's
// LD_LIBRARY_PATH), from a hostPath that must be a directory; otherwise no
// such volume exists.
func checkCUDALibraries(t *testing.T, vs valueSet, ps *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	var vol *corev1.Volume
	for i := range ps.Volumes {
		if ps.Volumes[i].Name == "cuda-libraries" {
			vol = &ps.Volumes[i]
		}
	}
	var mount *corev1.VolumeMount
	if c != nil {
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].MountPath == "/opt/cuda/lib" {
				mount = &c.VolumeMounts[i]
			}
		}
	}
	if vs.cudaLibraries == "" {
		if vol != nil || mount != nil {
			t.Errorf("CUDA libraries mounted though no hostPath is set")
		}
		return
	}
	if vol == nil || vol.HostPath == nil || vol.HostPath.Path != vs.cudaLibraries ||
		vol.HostPath.Type == nil || *vol.HostPath.Type != corev1.HostPathDirectory {
		t.Errorf("cuda-libraries volume %+v, want hostPath directory %s", vol, vs.cudaLibraries)
	}
	if mount == nil || mount.Name != "cuda-libraries" || !mount.ReadOnly {
		t.Errorf("worker mount at /opt/cuda/lib %+v, want cuda-libraries read-only", mount)
	}
}
