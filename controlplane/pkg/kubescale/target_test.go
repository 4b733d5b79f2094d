package kubescale

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeCluster is client-go's fake clientset (no API server: the unit
// tests' stand-in; e2e/kubescale runs against a real kube-apiserver) with
// the StatefulSet scale subresource emulated, which the fake's object
// tracker does not handle: get reads spec.replicas, update checks the
// resource version and writes it. onScale runs before each scale write.
type fakeCluster struct {
	*fake.Clientset
	mu        sync.Mutex
	rv        int
	conflicts int // scale updates to refuse with a conflict
	onScale   func(to int32)
	scales    []int32 // replicas written through the scale subresource
}

var stsResource = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}

func newFakeCluster(t *testing.T, ns, name string, replicas int32, ordinals *appsv1.StatefulSetOrdinals) *fakeCluster {
	t.Helper()
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec: appsv1.StatefulSetSpec{Replicas: &replicas, Ordinals: ordinals,
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "worker"}}}}},
	}
	c := &fakeCluster{Clientset: fake.NewClientset(sts), rv: 1}
	tracker := c.Tracker()
	c.PrependReactor("get", "statefulsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		obj, err := tracker.Get(stsResource, a.GetNamespace(), a.(k8stesting.GetAction).GetName())
		if err != nil {
			return true, nil, err
		}
		s := obj.(*appsv1.StatefulSet)
		return true, &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, ResourceVersion: s.ResourceVersion},
			Spec: autoscalingv1.ScaleSpec{Replicas: *s.Spec.Replicas}}, nil
	})
	c.PrependReactor("update", "statefulsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		sc := a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
		if c.onScale != nil {
			c.onScale(sc.Spec.Replicas)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		obj, err := tracker.Get(stsResource, a.GetNamespace(), sc.Name)
		if err != nil {
			return true, nil, err
		}
		s := obj.(*appsv1.StatefulSet).DeepCopy()
		if c.conflicts > 0 || sc.ResourceVersion != s.ResourceVersion {
			c.conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "statefulsets"}, sc.Name, errors.New("stale"))
		}
		c.rv++
		s.ResourceVersion = strconv.Itoa(c.rv)
		r := sc.Spec.Replicas
		s.Spec.Replicas = &r
		if err := tracker.Update(stsResource, s, s.Namespace); err != nil {
			return true, nil, err
		}
		c.scales = append(c.scales, r)
		return true, &autoscalingv1.Scale{ObjectMeta: s.ObjectMeta, Spec: sc.Spec}, nil
	})
	return c
}

// replicas reads spec.replicas back.
func (c *fakeCluster) replicas(t *testing.T, ns, name string) int32 {
	t.Helper()
	s, err := c.AppsV1().StatefulSets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *s.Spec.Replicas
}

// TestStatefulSetTargetWithFakeClientset: the Target reads replicas and
// the first ordinal, writes through the scale subresource, rides out a
// conflict, and refuses when the replicas are not what it planned from.
func TestStatefulSetTargetWithFakeClientset(t *testing.T) {
	ctx := context.Background()
	c := newFakeCluster(t, "gpu", "avatarfleet-worker", 3, &appsv1.StatefulSetOrdinals{Start: 2})
	target := StatefulSet{Client: c.AppsV1(), Namespace: "gpu", Name: "avatarfleet-worker"}
	w, err := target.Workload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w != (Workload{Namespace: "gpu", Name: "avatarfleet-worker", Replicas: 3, OrdinalStart: 2}) {
		t.Fatalf("workload %+v", w)
	}
	c.conflicts = 1
	if err := target.SetReplicas(ctx, 3, 1); err != nil {
		t.Fatalf("scale with one conflict: %v", err)
	}
	if got := c.replicas(t, "gpu", "avatarfleet-worker"); got != 1 {
		t.Fatalf("replicas %d, want 1", got)
	}
	if err := target.SetReplicas(ctx, 3, 2); !errors.Is(err, ErrReplicasChanged) {
		t.Fatalf("scale from a stale count: %v, want ErrReplicasChanged", err)
	}
	if got := c.replicas(t, "gpu", "avatarfleet-worker"); got != 1 {
		t.Fatalf("replicas %d after a refused scale, want 1", got)
	}
	missing := StatefulSet{Client: c.AppsV1(), Namespace: "gpu", Name: "nope"}
	if _, err := missing.Workload(ctx); !apierrors.IsNotFound(err) {
		t.Fatalf("missing statefulset: %v", err)
	}
}
