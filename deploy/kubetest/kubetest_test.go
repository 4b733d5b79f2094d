package kubetest_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/avatarfleet/avatarfleet/deploy/kubetest"
)

// TestAPIServerValidatesAndStores: the server started is a real one: it
// stores a valid object and rejects an invalid one with its own validation.
func TestAPIServerValidatesAndStores(t *testing.T) {
	c := kubetest.Start(t)
	cs := c.Clientset(t)
	ctx := t.Context()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kubetest", Namespace: "default"}, Data: map[string]string{"a": "b"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create a config map: %v", err)
	}
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kubetest", metav1.GetOptions{})
	if err != nil || got.Data["a"] != "b" {
		t.Fatalf("read it back: %v %v", got, err)
	}
	bad := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "Not_A_DNS_Name", Namespace: "default"}}
	_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("an invalid name: got %v, want the server's Invalid error", err)
	}
}
