package kubescale_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/cli"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/kubescale"
	"github.com/avatarfleet/avatarfleet/deploy/kubetest"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m),
		// klog (through client-go) starts its flush daemon at init.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

const (
	ns   = "default"
	name = "avatarfleet-worker"
)

func pod(i int) string { return fmt.Sprintf("%s-%d", name, i) }

// run is one avatarctl run.
type run struct {
	code           int
	stdout, stderr string
}

// avatarctl runs the real command line in-process against replica 0 of
// the fleet with the admin key.
func avatarctl(ctx context.Context, f *testfleet.Fleet, args ...string) run {
	var out, errOut bytes.Buffer
	env := map[string]string{cli.EnvURL: f.URL(0), cli.EnvAPIKey: testfleet.AdminKey}
	code := cli.Run(ctx, cli.Options{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, args)
	return run{code: code, stdout: out.String(), stderr: errOut.String()}
}

// TestScaleAgainstAPIServer: on a real API server and a real fleet,
//   - 3 → 1 with no worker able to take the sessions times out with exit
//     code 3, leaves the StatefulSet untouched and undrains the workers;
//   - 3 → 1 migrates the sessions off workers 1 and 2 and writes the scale
//     only when both hold none (checked at the moment the write reaches
//     the API server), the sessions staying ready on worker 0;
//   - 1 → 2 writes the scale and returns only once the new pod's worker
//     registered (with the drain mark of the scale-down, which it clears)
//     and is active.
func TestScaleAgainstAPIServer(t *testing.T) {
	ctx := t.Context()
	cluster := kubetest.Start(t)
	cs := cluster.Clientset(t)
	createStatefulSet(t, cs, 3)

	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{
		{ID: pod(0), SlotsPerGPU: 4}, {ID: pod(1), SlotsPerGPU: 2}, {ID: pod(2), SlotsPerGPU: 2},
	}})
	// Four sessions on workers 1 and 2: worker 0 is drained while they are
	// placed.
	setDrained(t, f, pod(0), true)
	var sessions []apiv1.Session
	perWorker := map[string]int{}
	for range 4 {
		r := f.MustDo(0, http.MethodPost, "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
		if r.Status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		var s apiv1.Session
		r.JSON(t, &s)
		sessions = append(sessions, s)
		perWorker[s.WorkerID]++
	}
	if perWorker[pod(1)] != 2 || perWorker[pod(2)] != 2 {
		t.Fatalf("sessions per worker %v, want 2 on each of workers 1 and 2", perWorker)
	}
	setDrained(t, f, pod(0), false)
	gen := statefulSet(t, cs).Generation

	t.Run("timeout leaves the replicas and undrains", func(t *testing.T) {
		// Worker 0 drained: the sessions have nowhere to go.
		setDrained(t, f, pod(0), true)
		defer setDrained(t, f, pod(0), false)
		start := time.Now()
		r := avatarctl(ctx, f, "workers", "scale", "--replicas", "1", "--timeout", "3s", "--kubeconfig", cluster.Kubeconfig)
		took := time.Since(start)
		if r.code != cli.ExitTimeout {
			t.Fatalf("exit %d, want %d\n%s%s", r.code, cli.ExitTimeout, r.stdout, r.stderr)
		}
		for _, want := range []string{"not scaled", pod(1) + " (2 sessions)", pod(2) + " (2 sessions)", "replicas stay 3", "undrained again"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q: %s", want, r.stderr)
			}
		}
		if !strings.Contains(r.stdout, pod(1)+": 2 sessions left") || !strings.Contains(r.stdout, "0 free slots for 4 sessions") {
			t.Errorf("no progress or no capacity warning: %s", r.stdout)
		}
		if took < 3*time.Second || took > 20*time.Second {
			t.Errorf("took %s for a 3s timeout", took)
		}
		s := statefulSet(t, cs)
		if *s.Spec.Replicas != 3 || s.Generation != gen {
			t.Fatalf("statefulset replicas %d generation %d, want 3 and %d unchanged", *s.Spec.Replicas, s.Generation, gen)
		}
		for _, id := range []string{pod(1), pod(2)} {
			// The undrain is in etcd; the replica's registry follows it.
			f.Eventually(10*time.Second, id+" active again", func() bool {
				return getWorker(t, f, id).State == apiv1.WorkerActive
			})
			if w := getWorker(t, f, id); w.Sessions != 2 {
				t.Errorf("%s after the timeout: %d sessions, want 2", id, w.Sessions)
			}
		}
	})

	t.Run("down drains before it scales", func(t *testing.T) {
		guard := newScaleGuard(t, cluster, f)
		r := avatarctl(ctx, f, "workers", "scale", "--replicas", "1", "--timeout", "2m", "--kubeconfig", guard.kubeconfig)
		if r.code != cli.ExitOK {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		t.Logf("avatarctl output:\n%s", r.stdout)
		writes := guard.seen()
		if len(writes) != 1 {
			t.Fatalf("scale writes %v, want one", writes)
		}
		if writes[0][pod(1)] != 0 || writes[0][pod(2)] != 0 {
			t.Fatalf("slots held when the scale write reached the API server: %v", writes[0])
		}
		if got := *statefulSet(t, cs).Spec.Replicas; got != 1 {
			t.Fatalf("replicas %d, want 1", got)
		}
		out := r.stdout
		if strings.Contains(out, "warning") {
			t.Errorf("a warning with room for every session:\n%s", out)
		}
		for _, want := range []string{pod(1) + ": 2 sessions left", pod(1) + ": 0 sessions left", pod(2) + ": 0 sessions left"} {
			if i := strings.Index(out, want); i < 0 || i > strings.Index(out, "scaled from 3 to 1") {
				t.Errorf("%q missing or after the scale:\n%s", want, out)
			}
		}
		for _, s := range sessions {
			var got apiv1.Session
			r := f.MustDo(0, http.MethodGet, "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil)
			r.JSON(t, &got)
			if got.State != apiv1.StateReady || got.WorkerID != pod(0) {
				t.Errorf("session %s: %s on %s, want ready on %s (migrated, not ended)", s.ID, got.State, got.WorkerID, pod(0))
			}
		}
		// The kubelet's part: the pods that went stop (SIGTERM).
		for _, id := range []string{pod(1), pod(2)} {
			if err := f.StopWorker(id); err != nil {
				t.Fatalf("stop %s: %v", id, err)
			}
		}
		f.Eventually(15*time.Second, "workers 1 and 2 leave the fleet", func() bool {
			ids := listWorkers(t, f)
			return !slices.Contains(ids, pod(1)) && !slices.Contains(ids, pod(2))
		})
	})

	t.Run("up waits for the new worker", func(t *testing.T) {
		done := make(chan run, 1)
		go func() {
			done <- avatarctl(ctx, f, "workers", "scale", "--replicas", "2", "--timeout", "90s", "--kubeconfig", cluster.Kubeconfig, "-o", "json")
		}()
		// The kubelet's part: watch the StatefulSet; when it asks for a
		// second pod, start that pod's worker.
		waitReplicas(t, cs, 2)
		time.Sleep(time.Second)
		select {
		case r := <-done:
			t.Fatalf("avatarctl returned before the new worker registered: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		default:
		}
		f.StartWorker(testfleet.WorkerSpec{ID: pod(1), SlotsPerGPU: 2})
		var r run
		select {
		case r = <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("avatarctl did not return after the worker registered")
		}
		if r.code != cli.ExitOK {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		t.Logf("avatarctl progress (stderr with -o json):\n%s", r.stderr)
		for _, want := range []string{pod(1) + ": waiting for its pod to register", pod(1) + ": registered draining", pod(1) + ": registered and active"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("progress lacks %q:\n%s", want, r.stderr)
			}
		}
		var res kubescale.Result
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.From != 1 || res.To != 2 ||
			!slices.Equal(res.Added, []string{pod(1)}) || res.StatefulSet != name || res.Namespace != ns {
			t.Fatalf("-o json result %+v (%v) from %q", res, err, r.stdout)
		}
		if w := getWorker(t, f, pod(1)); w.State != apiv1.WorkerActive {
			t.Fatalf("%s is %s, want active", pod(1), w.State)
		}
		if got := *statefulSet(t, cs).Spec.Replicas; got != 2 {
			t.Fatalf("replicas %d, want 2", got)
		}
	})
}

// createStatefulSet stores the worker StatefulSet (the API server
// validates it; no pod is ever made).
func createStatefulSet(t *testing.T, cs kubernetes.Interface, replicas int32) {
	t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": "avatarfleet", "app.kubernetes.io/component": "worker"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    &replicas,
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "avatarfleet/worker:test"}}},
			},
		},
	}
	if _, err := cs.AppsV1().StatefulSets(ns).Create(t.Context(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create statefulset: %v", err)
	}
}

func statefulSet(t *testing.T, cs kubernetes.Interface) *appsv1.StatefulSet {
	t.Helper()
	s, err := cs.AppsV1().StatefulSets(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get statefulset: %v", err)
	}
	return s
}

// waitReplicas watches the StatefulSet until spec.replicas is n.
func waitReplicas(t *testing.T, cs kubernetes.Interface, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	w, err := cs.AppsV1().StatefulSets(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
	})
	if err != nil {
		t.Fatalf("watch statefulset: %v", err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if s, ok := ev.Object.(*appsv1.StatefulSet); ok && s.Spec.Replicas != nil && *s.Spec.Replicas == n {
			return
		}
	}
	t.Fatalf("statefulset never asked for %d replicas", n)
}

// setDrained drains (plainly) or undrains a worker and waits until the
// control plane's registry sees it.
func setDrained(t *testing.T, f *testfleet.Fleet, id string, drained bool) {
	t.Helper()
	verb, status := "undrain", http.StatusOK
	if drained {
		verb, status = "drain", http.StatusAccepted
	}
	if r := f.MustDo(0, http.MethodPost, "/v1/workers/"+id+"/"+verb, testfleet.AdminKey, nil); r.Status != status {
		t.Fatalf("%s %s: %d %s", verb, id, r.Status, r.Body)
	}
	f.Eventually(10*time.Second, fmt.Sprintf("%s drained=%v", id, drained), func() bool {
		v, ok := f.Replicas[0].Registry().Worker(id)
		return ok && v.Drained == drained
	})
}

func getWorker(t *testing.T, f *testfleet.Fleet, id string) apiv1.Worker {
	t.Helper()
	var w apiv1.Worker
	r := f.MustDo(0, http.MethodGet, "/v1/workers/"+id, testfleet.AdminKey, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("get %s: %d %s", id, r.Status, r.Body)
	}
	r.JSON(t, &w)
	return w
}

func listWorkers(t *testing.T, f *testfleet.Fleet) []string {
	t.Helper()
	var l apiv1.WorkerList
	f.MustDo(0, http.MethodGet, "/v1/workers", testfleet.AdminKey, nil).JSON(t, &l)
	var ids []string
	for _, w := range l.Workers {
		ids = append(ids, w.ID)
	}
	return ids
}

// scaleGuard is a reverse proxy in front of the real API server that, when
// a write to the StatefulSet's scale subresource arrives, reads the slot
// keys the fleet holds in etcd before it forwards the write: the exact
// state of the fleet at the moment the scale changes.
type scaleGuard struct {
	kubeconfig string
	mu         sync.Mutex
	writes     []map[string]int // slots per worker at each scale write
}

func newScaleGuard(t *testing.T, cluster *kubetest.Cluster, f *testfleet.Fleet) *scaleGuard {
	t.Helper()
	target, err := url.Parse(cluster.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := rest.TransportFor(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	g := &scaleGuard{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = tr
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodPut || r.Method == http.MethodPatch) && strings.HasSuffix(r.URL.Path, "/statefulsets/"+name+"/scale") {
			perGPU, _, err := f.SlotKeys(r.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			held := map[string]int{}
			for worker, gpus := range perGPU {
				for _, n := range gpus {
					held[worker] += n
				}
			}
			g.mu.Lock()
			g.writes = append(g.writes, held)
			g.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["guard"] = &clientcmdapi.Cluster{Server: srv.URL}
	cfg.AuthInfos["guard"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["guard"] = &clientcmdapi.Context{Cluster: "guard", AuthInfo: "guard", Namespace: ns}
	cfg.CurrentContext = "guard"
	g.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, g.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *scaleGuard) seen() []map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.writes)
}
