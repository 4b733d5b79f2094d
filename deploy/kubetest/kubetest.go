// Package kubetest starts a real Kubernetes API server for tests: the
// kube-apiserver and etcd binaries that scripts/kube-tools.sh builds from
// source (through the Go module proxy) into .tools/k8s/<version>/, run by
// controller-runtime's envtest. Only the API server and its etcd run: no
// controller-manager, scheduler or kubelet, so objects are validated,
// admitted and stored, but no pod is ever created or started.
package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// KubernetesVersion is the release of kube-apiserver the tests run; it must
// match KUBERNETES_VERSION in scripts/kube-tools.sh.
const KubernetesVersion = "v1.37.2"

// Cluster is a running API server.
type Cluster struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file for Config (for tools that take a
	// path, such as avatarctl's --kubeconfig).
	Kubeconfig string
}

// Clientset is a typed client of the cluster.
func (c *Cluster) Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("kubernetes client: %v", err)
	}
	return cs
}

// AssetsDir is where scripts/kube-tools.sh puts kube-apiserver and etcd.
// KUBEBUILDER_ASSETS, when set, takes precedence (envtest's own variable).
func AssetsDir() (string, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		return d, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("locate the repository: no caller information")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	return filepath.Join(root, ".tools", "k8s", KubernetesVersion), nil
}

// Start starts an API server with its own etcd and stops both when the
// test ends. It fails the test, naming the missing step, when the binaries
// have not been built (`make setup` builds them).
func Start(t testing.TB) *Cluster {
	t.Helper()
	dir, err := AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.Mode()&0o111 == 0 {
			t.Fatalf("%s is missing from %s: run `make setup` (scripts/kube-tools.sh builds it)", bin, dir)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    dir,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop kube-apiserver and etcd: %v", err)
		}
	})
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "kubetest-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatalf("add an admin user: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return &Cluster{Config: user.Config(), Kubeconfig: path}
}
