//go:build linux

package binfleet

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// registeredLine is what a worker logs once its record is in etcd under
// its new lease (registration.Registrar).
const registeredLine = "worker registered"

// workerIndex is the position of worker id in Workers; it fails the test
// for an unknown id.
func (f *Fleet) workerIndex(t testing.TB, id string) int {
	t.Helper()
	for i, w := range f.WorkerIDs {
		if w == id {
			return i
		}
	}
	t.Fatalf("no worker %q in this fleet (%v)", id, f.WorkerIDs)
	return -1
}

// Worker is the process of worker id (its latest, after a restart).
func (f *Fleet) Worker(t testing.TB, id string) *Proc {
	t.Helper()
	return f.Workers[f.workerIndex(t, id)]
}

// KillWorker kills worker id as a crash would (`kill -9` of its process
// group: no drain, no deregistration, its lease left to expire or be
// revoked) and waits until it has exited. It returns when the signal was
// sent.
func (f *Fleet) KillWorker(t testing.TB, id string) time.Time {
	t.Helper()
	return f.Worker(t, id).Kill()
}

// RestartWorker starts worker id again with the flags, ports and id it
// first had (after KillWorker, or after it stopped) and waits up to
// timeout until it has registered under a new lease and is active.
func (f *Fleet) RestartWorker(t testing.TB, id string, timeout time.Duration) {
	t.Helper()
	i := f.workerIndex(t, id)
	select {
	case <-f.Workers[i].Done():
	default:
		t.Fatalf("restart worker %s: it is still running", id)
	}
	p := StartProc(t, id, f.root, f.workerBin, f.workerArgs[i], f.workerEnv[i])
	f.Workers[i] = p
	// The API may still show the old registration as active until its lease
	// goes: wait for the new process's own registration first.
	f.WaitUntil(t, "worker "+id+" registered again", timeout, func() error {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), registeredLine) {
			return fmt.Errorf("no %q in its log yet", registeredLine)
		}
		return f.workerActive(id)
	})
}
