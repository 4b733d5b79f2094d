//go:build linux

package markrecovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m),
		// http.DefaultClient's kept-alive connections to the binaries.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// sessionsOnDoomed is how many sessions the doomed replica creates.
const sessionsOnDoomed = 5

// TestReplicaKilledBeforeReadyMarks: a second bin/controlplane, whose
// ready marks a test hook holds back, answers 201 (ready) to creates whose
// worker runs them, and is then killed (SIGKILL) before any mark is
// written. Its records stay starting (the surviving replica shows them so
// once its read has waited ReadySettle); the survivor's reaper, finding
// each create's record older than 30 s with its slot held, asks the worker,
// which runs the session, and marks it ready. Nothing leaks: the worker's
// used slots equal the live sessions, and after deletes both are zero.
func TestReplicaKilledBeforeReadyMarks(t *testing.T) {
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{SlotsPerGPU: sessionsOnDoomed + 1, Args: []string{"--prewarm", "0"}}}})
	doomed := f.StartReplica(t, "doomed", []string{"AVATARFLEET_TEST_HOOK_MARK_DELAY=10m"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ids := createWithHeldMarks(ctx, t, f, doomed.URL, sessionsOnDoomed)
	killed := doomed.Proc.Kill()

	f.WaitUntil(t, "every session of the killed replica marked ready by the survivor", 75*time.Second, func() error {
		for _, id := range ids {
			s, err := f.GetSession(ctx, id)
			if err != nil {
				return err
			}
			if s.State != apiv1.StateReady {
				return fmt.Errorf("session %s is %s", id, s.State)
			}
		}
		return nil
	})
	t.Logf("recovered %d sessions %s after the kill", len(ids), time.Since(killed).Round(time.Second))

	if err := checkNoLeak(ctx, f, len(ids)); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := f.DeleteSession(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	f.WaitUntil(t, "slots freed after the deletes", 30*time.Second, func() error { return checkNoLeak(ctx, f, 0) })
}

// TestReadyMarkLostThenWorkerLost: creates answered 201 whose ready marks
// were never written (their replica killed first, as above), and then the
// worker running half of them is killed (kill -9). Those sessions are
// re-placed on the other worker, keeping their ids, as a ready session's
// would be, instead of failing as placements that did not complete; the
// others are marked ready where they run. No slot is left behind.
func TestReadyMarkLostThenWorkerLost(t *testing.T) {
	spec := binfleet.WorkerSpec{SlotsPerGPU: 2 * sessionsOnDoomed, Args: []string{"--prewarm", "0"}}
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{spec, spec}})
	doomed := f.StartReplica(t, "doomed", []string{"AVATARFLEET_TEST_HOOK_MARK_DELAY=10m"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ids := createWithHeldMarks(ctx, t, f, doomed.URL, sessionsOnDoomed)
	byWorker := map[string][]string{}
	for _, id := range ids {
		s, err := f.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		byWorker[s.WorkerID] = append(byWorker[s.WorkerID], id)
	}
	lost := f.WorkerIDs[0]
	if len(byWorker[lost]) == 0 {
		lost = f.WorkerIDs[1]
	}
	survivor := f.WorkerIDs[0]
	if survivor == lost {
		survivor = f.WorkerIDs[1]
	}
	doomed.Proc.Kill()
	killed := f.KillWorker(t, lost)

	f.WaitUntil(t, "every session ready on the surviving worker", 90*time.Second, func() error {
		for _, id := range ids {
			s, err := f.GetSession(ctx, id)
			if err != nil {
				return err
			}
			if s.State != apiv1.StateReady || s.WorkerID != survivor {
				return fmt.Errorf("session %s is %s on %s", id, s.State, s.WorkerID)
			}
		}
		return nil
	})
	t.Logf("%d sessions of the killed worker re-placed, %d marked ready, %s after the kill",
		len(byWorker[lost]), len(byWorker[survivor]), time.Since(killed).Round(time.Second))
	for _, id := range byWorker[lost] {
		s, err := f.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if s.Moves != 1 || s.MovedFrom != lost || s.MoveReason != "worker_lost" {
			t.Errorf("session %s: moves %d from %q (%q), want 1 from %s (worker_lost)", id, s.Moves, s.MovedFrom, s.MoveReason, lost)
		}
	}
	var w apiv1.Worker
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/workers/"+survivor, &w); err != nil {
		t.Fatal(err)
	}
	if w.Sessions != len(ids) {
		t.Errorf("the surviving worker runs %d sessions, want %d", w.Sessions, len(ids))
	}
}

// createWithHeldMarks creates n sessions through a replica whose ready
// marks a test hook holds back; each create answers 201 ready, and the
// fleet's own replica reads each record as starting.
func createWithHeldMarks(ctx context.Context, t *testing.T, f *binfleet.Fleet, replicaURL string, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		var s apiv1.Session
		body, _ := json.Marshal(apiv1.CreateSessionRequest{})
		if err := binfleet.Call(ctx, http.MethodPost, replicaURL+"/v1/sessions", f.APIKey, "application/json", body, http.StatusCreated, &s); err != nil {
			t.Fatal(err)
		}
		if s.State != apiv1.StateReady {
			t.Fatalf("create answered %s, want ready", s.State)
		}
		ids = append(ids, s.ID)
	}
	// The marks are held: the other replica reads each record as starting
	// (after waiting ReadySettle for a mark that does not come).
	for _, id := range ids {
		s, err := f.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if s.State != apiv1.StateStarting {
			t.Fatalf("session %s: %s on the other replica, want starting (the test hook holds its mark)", id, s.State)
		}
	}
	return ids
}

// checkNoLeak is nil when the fleet has want live sessions and its worker
// holds exactly that many slots.
func checkNoLeak(ctx context.Context, f *binfleet.Fleet, want int) error {
	var list apiv1.SessionList
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/sessions", &list); err != nil {
		return err
	}
	live := 0
	for _, s := range list.Sessions {
		if s.State == apiv1.StateReady || s.State == apiv1.StateStarting {
			live++
		}
	}
	var w apiv1.Worker
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/workers/"+f.WorkerIDs[0], &w); err != nil {
		return err
	}
	used := 0
	for _, g := range w.GPUs {
		used += int(g.Used)
	}
	if live != want || used != want || w.Sessions != want {
		return fmt.Errorf("%d live sessions, %d slots used, worker reports %d sessions; want %d of each", live, used, w.Sessions, want)
	}
	return nil
}
