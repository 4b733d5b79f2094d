package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/cli"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// avatarctl runs the CLI in-process against replica 0 of a real fleet.
func avatarctl(t *testing.T, f *testfleet.Fleet, key string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{cli.EnvURL: f.URL(0), cli.EnvAPIKey: key}
	code = cli.Run(context.Background(), cli.Options{
		Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string { return env[k] },
	}, args)
	return out.String(), errOut.String(), code
}

// TestCLIAgainstControlPlane drives every verb against a running control
// plane with real etcd, NATS and a worker.
func TestCLIAgainstControlPlane(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w1", SlotsPerGPU: 2}}})

	out, errOut, code := avatarctl(t, f, testfleet.AdminKey, "workers", "list")
	if code != 0 || !strings.Contains(out, "w1") || !strings.Contains(out, "active") {
		t.Fatalf("workers list: %d %q %q", code, out, errOut)
	}

	// sessions create → get → list, JSON output parsed back.
	out, errOut, code = avatarctl(t, f, testfleet.SessionsKey, "sessions", "create", "-o", "json", "--label", "team=qa", "--idle-timeout", "60s")
	if code != 0 {
		t.Fatalf("sessions create: %d %q", code, errOut)
	}
	var s apiv1.Session
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("create -o json output %q: %v", out, err)
	}
	if s.State != apiv1.StateReady || s.WorkerID != "w1" || s.IdleTimeoutSeconds != 60 || s.Labels["team"] != "qa" {
		t.Fatalf("created %+v", s)
	}
	out, _, code = avatarctl(t, f, testfleet.SessionsKey, "sessions", "get", s.ID)
	if code != 0 || !strings.Contains(out, s.ID) || !strings.Contains(out, "ready") {
		t.Fatalf("sessions get: %d %q", code, out)
	}
	out, _, code = avatarctl(t, f, testfleet.SessionsKey, "sessions", "list")
	if code != 0 || !strings.Contains(out, s.ID) {
		t.Fatalf("sessions list: %d %q", code, out)
	}

	// Scopes are enforced: a sessions key cannot list workers.
	_, errOut, code = avatarctl(t, f, testfleet.SessionsKey, "workers", "list")
	if code == 0 || !strings.Contains(errOut, apiv1.CodeForbidden) {
		t.Fatalf("workers list with a sessions key: %d %q", code, errOut)
	}

	// drain --wait reports the sessions left until the worker is empty.
	deleted := make(chan error, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		_, errOut, code := avatarctl(t, f, testfleet.SessionsKey, "sessions", "delete", s.ID)
		if code != 0 {
			deleted <- &cliError{errOut}
			return
		}
		deleted <- nil
	}()
	out, errOut, code = avatarctl(t, f, testfleet.AdminKey, "workers", "drain", "w1", "--wait", "--timeout", "20s")
	if err := <-deleted; err != nil {
		t.Fatalf("sessions delete: %v", err)
	}
	if code != 0 || !strings.Contains(out, "1 session left") || !strings.Contains(out, "drained") {
		t.Fatalf("drain --wait: %d %q %q", code, out, errOut)
	}
	// A drained worker takes nothing new.
	_, errOut, code = avatarctl(t, f, testfleet.SessionsKey, "sessions", "create")
	if code == 0 || !strings.Contains(errOut, apiv1.CodeNoCapacity) {
		t.Fatalf("create on a drained fleet: %d %q", code, errOut)
	}
	// drain --wait with sessions that never end times out with its own code.
	_, _, code = avatarctl(t, f, testfleet.AdminKey, "workers", "undrain", "w1")
	if code != 0 {
		t.Fatalf("undrain: %d", code)
	}
	f.Eventually(5*time.Second, "w1 active", func() bool {
		out, _, _ := avatarctl(t, f, testfleet.AdminKey, "workers", "get", "w1")
		return strings.Contains(out, "active")
	})
	out, errOut, code = avatarctl(t, f, testfleet.SessionsKey, "sessions", "create", "-o", "json")
	if code != 0 {
		t.Fatalf("create after undrain: %d %q", code, errOut)
	}
	_, _, code = avatarctl(t, f, testfleet.AdminKey, "workers", "drain", "w1", "--wait", "--timeout", "1s")
	if code != cli.ExitTimeout {
		t.Fatalf("drain --wait past its timeout: exit %d, want %d", code, cli.ExitTimeout)
	}

	// Deleting is idempotent; an unknown id is an error.
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, errOut, code = avatarctl(t, f, testfleet.SessionsKey, "sessions", "delete", s.ID); code != 0 {
			t.Fatalf("sessions delete: %d %q", code, errOut)
		}
	}
	if _, errOut, code = avatarctl(t, f, testfleet.SessionsKey, "sessions", "get", "sess_unknown"); code != cli.ExitError || !strings.Contains(errOut, apiv1.CodeNotFound) {
		t.Fatalf("get unknown: %d %q", code, errOut)
	}
}

type cliError struct{ stderr string }

func (e *cliError) Error() string { return e.stderr }
