package kubescale

import (
	"context"
	"errors"
	"fmt"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	"k8s.io/client-go/util/retry"
)

// ErrReplicasChanged is a scale that found the replica count no longer
// what it planned from: someone else scaled meanwhile.
var ErrReplicasChanged = errors.New("replicas changed meanwhile")

// Target is the Kubernetes workload whose replica count Scale changes.
type Target interface {
	// Workload reads the workload's name, replica count and first ordinal.
	Workload(ctx context.Context) (Workload, error)
	// SetReplicas changes the replica count from `from` to `to`; it fails
	// with ErrReplicasChanged, changing nothing, when the count is not
	// `from` any more.
	SetReplicas(ctx context.Context, from, to int32) error
}

// StatefulSet is a Target: a StatefulSet scaled through its scale
// subresource, as `kubectl scale` does. Client is the apps/v1 client
// (appsv1client.NewForConfig, or a clientset's AppsV1()): only that API
// group, which keeps avatarctl free of every other group's client.
type StatefulSet struct {
	Client          appsv1client.AppsV1Interface
	Namespace, Name string
}

// Workload implements Target.
func (s StatefulSet) Workload(ctx context.Context) (Workload, error) {
	sts, err := s.Client.StatefulSets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		return Workload{}, fmt.Errorf("get statefulset %s/%s: %w", s.Namespace, s.Name, err)
	}
	w := Workload{Namespace: s.Namespace, Name: s.Name, Replicas: 1} // the API's default
	if sts.Spec.Replicas != nil {
		w.Replicas = *sts.Spec.Replicas
	}
	if sts.Spec.Ordinals != nil {
		w.OrdinalStart = sts.Spec.Ordinals.Start
	}
	return w, nil
}

// SetReplicas implements Target: it reads the scale, checks it still says
// `from`, and updates it with the resource version it read, reading again
// on a conflict (the controller updates the status meanwhile).
func (s StatefulSet) SetReplicas(ctx context.Context, from, to int32) error {
	sts := s.Client.StatefulSets(s.Namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sc, err := sts.GetScale(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if sc.Spec.Replicas != from {
			return fmt.Errorf("%w: replicas are %d, not %d", ErrReplicasChanged, sc.Spec.Replicas, from)
		}
		next := &autoscalingv1.Scale{ObjectMeta: sc.ObjectMeta, Spec: autoscalingv1.ScaleSpec{Replicas: to}}
		_, err = sts.UpdateScale(ctx, s.Name, next, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("scale statefulset %s/%s from %d to %d: %w", s.Namespace, s.Name, from, to, err)
	}
	return nil
}
