package kubescale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// fakeFleet is an in-memory stand-in for the fleet's REST API (the real
// one runs in e2e/kubescale). onList runs under its lock at each listing,
// so a test can move sessions or register workers as time passes.
type fakeFleet struct {
	mu      sync.Mutex
	workers map[string]*apiv1.Worker
	calls   []string
	lists   int
	onList  func(f *fakeFleet)
}

func newFakeFleet(ws ...apiv1.Worker) *fakeFleet {
	f := &fakeFleet{workers: map[string]*apiv1.Worker{}}
	for _, w := range ws {
		f.workers[w.ID] = &w
	}
	return f
}

func (f *fakeFleet) ListWorkers(context.Context) ([]apiv1.Worker, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.onList != nil {
		f.onList(f)
	}
	var out []apiv1.Worker
	for _, w := range f.workers {
		out = append(out, *w)
	}
	return out, nil
}

func (f *fakeFleet) DrainWorkerMigrate(_ context.Context, id string) (*apiv1.Worker, error) {
	return f.set(id, "drain", apiv1.WorkerDraining)
}

func (f *fakeFleet) UndrainWorker(_ context.Context, id string) (*apiv1.Worker, error) {
	return f.set(id, "undrain", apiv1.WorkerActive)
}

func (f *fakeFleet) set(id, call, state string) (*apiv1.Worker, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call+" "+id)
	w, ok := f.workers[id]
	if !ok {
		return nil, &apiclient.APIError{Status: http.StatusNotFound, Code: apiv1.CodeNotFound, Message: "no worker " + id}
	}
	w.State = state
	c := *w
	return &c, nil
}

// sessionsOf reads a worker's count (-1: not registered).
func (f *fakeFleet) sessionsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w, ok := f.workers[id]; ok {
		return w.Sessions
	}
	return -1
}

func (f *fakeFleet) state(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w, ok := f.workers[id]; ok {
		return w.State
	}
	return "absent"
}

// migrateOne moves one session off each draining worker to an active one.
func migrateOne(f *fakeFleet) {
	var to *apiv1.Worker
	for _, w := range f.workers {
		if w.State == apiv1.WorkerActive {
			to = w
		}
	}
	for _, w := range f.workers {
		if w.State == apiv1.WorkerDraining && w.Sessions > 0 && to != nil {
			w.Sessions--
			to.Sessions++
		}
	}
}

const (
	ns  = "gpu"
	sts = "avatarfleet-worker"
)

var (
	metavOpts = metav1.GetOptions{}
	updOpts   = metav1.UpdateOptions{}
)

func pod(i int) string { return fmt.Sprintf("%s-%d", sts, i) }

// TestScaleDownDrainsBeforeScaling (fake clientset, fake fleet): 3 → 1
// drains workers 1 and 2 with migration, reports their counts, and writes
// the scale only once both are empty.
func TestScaleDownDrainsBeforeScaling(t *testing.T) {
	c := newFakeCluster(t, ns, sts, 3, nil)
	f := newFakeFleet(wk(pod(0), apiv1.WorkerActive, 0), wk(pod(1), apiv1.WorkerActive, 2), wk(pod(2), apiv1.WorkerActive, 1))
	f.onList = func(f *fakeFleet) {
		if f.lists > 2 { // the first listing is the plan's, the second the first count
			migrateOne(f)
		}
	}
	atScale := map[string]int{}
	c.onScale = func(int32) {
		for i := range 3 {
			atScale[pod(i)] = f.sessionsOf(pod(i))
		}
	}
	var out bytes.Buffer
	res, err := Scale(context.Background(), Options{Target: StatefulSet{Client: c.AppsV1(), Namespace: ns, Name: sts}, Fleet: f,
		Replicas: 1, Timeout: 10 * time.Second, PollInterval: time.Millisecond, Progress: &out})
	if err != nil {
		t.Fatalf("scale: %v\n%s", err, out.String())
	}
	if got := c.replicas(t, ns, sts); got != 1 || !slices.Equal(c.scales, []int32{1}) {
		t.Fatalf("replicas %d, writes %v; want one write of 1", got, c.scales)
	}
	if atScale[pod(1)] != 0 || atScale[pod(2)] != 0 || atScale[pod(0)] != 3 {
		t.Fatalf("sessions when the scale was written: %v", atScale)
	}
	if !slices.Equal(res.Drained, []string{pod(1), pod(2)}) || res.From != 3 || res.To != 1 {
		t.Fatalf("result %+v", res)
	}
	for _, line := range []string{pod(1) + ": 2 sessions left", pod(1) + ": 1 session left", pod(1) + ": 0 sessions left",
		pod(2) + ": 1 session left", pod(2) + ": 0 sessions left", "scaled from 3 to 1 replicas"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("progress lacks %q:\n%s", line, out.String())
		}
	}
	if strings.Count(out.String(), pod(1)+": 1 session left") != 1 {
		t.Errorf("a count printed more than once:\n%s", out.String())
	}
}

// TestScaleDownGivesUp (fake clientset, fake fleet): when sessions do not
// leave in time, or someone undrains a worker, or the replicas change
// meanwhile, the scale is never written, and the workers that were active
// are undrained again (unless KeepDrained).
func TestScaleDownGivesUp(t *testing.T) {
	tests := []struct {
		name        string
		keepDrained bool
		onList      func(f *fakeFleet)
		meddle      func(c *fakeCluster)
		wantTimeout bool
		wantErr     string
		wantStates  [3]string
	}{
		{
			name: "timeout undrains what was active", wantTimeout: true,
			wantStates: [3]string{apiv1.WorkerActive, apiv1.WorkerActive, apiv1.WorkerDraining},
			wantErr:    pod(1) + " (2 sessions), " + pod(2) + " (1 session)",
		},
		{
			name: "timeout with KeepDrained", keepDrained: true, wantTimeout: true,
			wantStates: [3]string{apiv1.WorkerActive, apiv1.WorkerDraining, apiv1.WorkerDraining},
			wantErr:    "left draining: " + pod(1) + ", " + pod(2),
		},
		{
			name: "undrained by someone else",
			onList: func(f *fakeFleet) {
				if f.lists == 3 {
					f.workers[pod(1)].State = apiv1.WorkerActive
				}
			},
			wantStates: [3]string{apiv1.WorkerActive, apiv1.WorkerActive, apiv1.WorkerDraining},
			wantErr:    "was undrained while it was being emptied",
		},
		{
			name:   "replicas changed meanwhile",
			onList: migrateOne,
			meddle: func(c *fakeCluster) {
				s, _ := c.AppsV1().StatefulSets(ns).Get(context.Background(), sts, metavOpts)
				r := int32(4)
				s.Spec.Replicas = &r
				_, _ = c.AppsV1().StatefulSets(ns).Update(context.Background(), s, updOpts)
			},
			wantStates: [3]string{apiv1.WorkerActive, apiv1.WorkerActive, apiv1.WorkerDraining},
			wantErr:    "replicas changed meanwhile",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeCluster(t, ns, sts, 3, nil)
			// Worker 2 was draining already: it is drained with migration
			// but never undrained by the scale.
			f := newFakeFleet(wk(pod(0), apiv1.WorkerActive, 0), wk(pod(1), apiv1.WorkerActive, 2), wk(pod(2), apiv1.WorkerDraining, 1))
			f.onList = tt.onList
			if tt.meddle != nil {
				orig := f.onList
				f.onList = func(f *fakeFleet) {
					if f.lists == 1 {
						tt.meddle(c)
					}
					orig(f)
				}
			}
			var out bytes.Buffer
			_, err := Scale(context.Background(), Options{Target: StatefulSet{Client: c.AppsV1(), Namespace: ns, Name: sts}, Fleet: f,
				Replicas: 1, Timeout: 300 * time.Millisecond, PollInterval: time.Millisecond, KeepDrained: tt.keepDrained, Progress: &out})
			if err == nil || errors.Is(err, ErrTimeout) != tt.wantTimeout || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v; want timeout %v containing %q\n%s", err, tt.wantTimeout, tt.wantErr, out.String())
			}
			if len(c.scales) != 0 {
				t.Fatalf("scale written %v", c.scales)
			}
			for i, want := range tt.wantStates {
				if got := f.state(pod(i)); got != want {
					t.Errorf("%s is %s, want %s (calls %v)", pod(i), got, want, f.calls)
				}
			}
		})
	}
}

// TestScaleUpWaitsForRegistration (fake clientset, fake fleet): 1 → 3
// writes the scale, then waits until both new workers are active,
// undraining the one that registers with an old drain mark; without them
// it times out with the scale written.
func TestScaleUpWaitsForRegistration(t *testing.T) {
	for _, register := range []bool{true, false} {
		t.Run(fmt.Sprintf("register=%v", register), func(t *testing.T) {
			c := newFakeCluster(t, ns, sts, 1, nil)
			f := newFakeFleet(wk(pod(0), apiv1.WorkerActive, 0))
			listsAtScale := -1
			c.onScale = func(int32) {
				f.mu.Lock()
				listsAtScale = f.lists
				f.mu.Unlock()
			}
			f.onList = func(f *fakeFleet) {
				if !register || listsAtScale < 0 {
					return
				}
				switch f.lists - listsAtScale {
				case 2:
					f.workers[pod(1)] = &apiv1.Worker{ID: pod(1), State: apiv1.WorkerActive}
				case 4:
					f.workers[pod(2)] = &apiv1.Worker{ID: pod(2), State: apiv1.WorkerDraining}
				}
			}
			var out bytes.Buffer
			res, err := Scale(context.Background(), Options{Target: StatefulSet{Client: c.AppsV1(), Namespace: ns, Name: sts}, Fleet: f,
				Replicas: 3, Timeout: 2 * time.Second, PollInterval: time.Millisecond, Progress: &out})
			if got := c.replicas(t, ns, sts); got != 3 {
				t.Fatalf("replicas %d, want 3", got)
			}
			if !register {
				var te *TimeoutError
				if !errors.As(err, &te) || !te.Scaled || !slices.Equal(te.Waiting, []string{pod(1), pod(2)}) {
					t.Fatalf("err %v, want a timeout waiting for both", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("scale: %v\n%s", err, out.String())
			}
			if !slices.Equal(res.Added, []string{pod(1), pod(2)}) {
				t.Fatalf("result %+v", res)
			}
			if f.state(pod(2)) != apiv1.WorkerActive || !slices.Contains(f.calls, "undrain "+pod(2)) || slices.Contains(f.calls, "undrain "+pod(1)) {
				t.Fatalf("calls %v, %s %s", f.calls, pod(2), f.state(pod(2)))
			}
			for _, line := range []string{pod(1) + ": waiting for its pod to register", pod(1) + ": registered and active",
				pod(2) + ": registered draining", pod(2) + ": registered and active"} {
				if !strings.Contains(out.String(), line) {
					t.Errorf("progress lacks %q:\n%s", line, out.String())
				}
			}
		})
	}
}

// TestScaleRefuses: bad options fail before any call; the same count is a
// no-op.
func TestScaleRefuses(t *testing.T) {
	c := newFakeCluster(t, ns, sts, 2, nil)
	f := newFakeFleet()
	target := StatefulSet{Client: c.AppsV1(), Namespace: ns, Name: sts}
	for _, o := range []Options{
		{Fleet: f, Replicas: 1, Timeout: time.Second},
		{Target: target, Fleet: f, Replicas: -1, Timeout: time.Second},
		{Target: target, Fleet: f, Replicas: MaxReplicas + 1, Timeout: time.Second},
		{Target: target, Fleet: f, Replicas: 1},
		{Target: target, Fleet: f, Replicas: 1, Timeout: time.Second, PollInterval: -1},
	} {
		if _, err := Scale(context.Background(), o); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", o, err)
		}
	}
	if f.lists != 0 {
		t.Fatalf("%d listings for refused options", f.lists)
	}
	var out bytes.Buffer
	if _, err := Scale(context.Background(), Options{Target: target, Fleet: f, Replicas: 2, Timeout: time.Second, Progress: &out}); err != nil {
		t.Fatal(err)
	}
	if len(c.scales) != 0 || !strings.Contains(out.String(), "already has 2 replicas") {
		t.Fatalf("scales %v, output %q", c.scales, out.String())
	}
}
