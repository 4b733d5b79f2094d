package repotest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(WatchHangs(m).Run()) }

// hangsEnv makes TestHangingForTheReport hang: only the child process
// TestWatchHangsReportsBeforeTheTimeout starts sets it.
const hangsEnv = "REPOTEST_HANG_FOR_REPORT"

func TestHangingForTheReport(t *testing.T) {
	if os.Getenv(hangsEnv) == "" {
		return // runs only as the child below
	}
	blockInRepositoryCode(make(chan struct{}))
}

func blockInRepositoryCode(never chan struct{}) { <-never }

// TestWatchHangsReportsBeforeTheTimeout runs this binary again with a test
// that hangs under a short -test.timeout: the report names the hanging test
// and the function it blocks in, and the binary exits before the timeout's
// panic.
func TestWatchHangsReportsBeforeTheTimeout(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHangingForTheReport$", "-test.timeout=4s")
	cmd.Env = append(os.Environ(), hangsEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("child: %v, want exit status 2\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"HANG REPORT", "repotest.TestHangingForTheReport", "repotest.blockInRepositoryCode", "hangreport_test.go:"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "panic: test timed out") {
		t.Errorf("the timeout's panic came first:\n%s", got)
	}
	if d := time.Since(start); d >= 4*time.Second+2*time.Second {
		t.Errorf("child ran %s under a 4s timeout", d)
	}
}

func TestHangGroupsKeepsOnlyRepositoryStacksGroupedAndCut(t *testing.T) {
	stacks := `goroutine 7 [chan receive, 27 minutes]:
github.com/avatarfleet/avatarfleet/e2e/replica_test.waitFor(0xc000123456)
	/src/e2e/replica/x_test.go:10 +0x1d
testing.tRunner(0xc0001, 0xc0002)
	/usr/local/go/src/testing/testing.go:1934 +0xea
created by testing.(*T).Run in goroutine 1
	/usr/local/go/src/testing/testing.go:1997 +0x465

goroutine 9 [chan receive, 27 minutes]:
github.com/avatarfleet/avatarfleet/e2e/replica_test.waitFor(0xc000999999)
	/src/e2e/replica/x_test.go:10 +0x1d
testing.tRunner(0xc0003, 0xc0004)
	/usr/local/go/src/testing/testing.go:1934 +0xea
created by testing.(*T).Run in goroutine 5
	/usr/local/go/src/testing/testing.go:1997 +0x465

goroutine 8 [select]:
go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp.(*pipeline).handle(0xc0015053e0)
	/mod/rafthttp/pipeline.go:98 +0x17c
created by go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp.(*pipeline).start in goroutine 3
	/mod/rafthttp/pipeline.go:69 +0x125

goroutine 11 [IO wait]:
internal/poll.runtime_pollWait(0x7f, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
github.com/avatarfleet/avatarfleet/proto/fleetstore.(*Store).retry(0xc0, {0x1, 0x2})
	/src/proto/fleetstore/retry.go:120 +0x99
`
	groups := hangGroups([]byte(stacks))
	if len(groups) != 2 {
		t.Fatalf("%d groups, want 2 (the two waitFor stacks as one, the store's retry; not etcd's): %+v", len(groups), groups)
	}
	if groups[0].count != 2 || !strings.Contains(groups[0].text, "replica_test.waitFor\n") ||
		!strings.Contains(groups[0].text, "x_test.go:10\n") || strings.Contains(groups[0].text, "tRunner") ||
		strings.Contains(groups[0].text, "0xc0") || !strings.HasPrefix(groups[0].text, "[chan receive, 27 minutes]") {
		t.Errorf("first group:\n%s", groups[0].text)
	}
	if groups[1].count != 1 || !strings.Contains(groups[1].text, "internal/poll.runtime_pollWait") ||
		!strings.Contains(groups[1].text, "fleetstore.(*Store).retry\n") {
		t.Errorf("second group keeps the top frame and ours:\n%s", groups[1].text)
	}
}
