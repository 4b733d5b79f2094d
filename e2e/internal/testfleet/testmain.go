package testfleet

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// leftoverSettle bounds how long VerifyTestMain waits for goroutines that
// outlive their test inside etcd.
const leftoverSettle = 15 * time.Second

// VerifyTestMain runs a fleet test binary's tests under
// repotest.WatchHangs and then checks with goleak that no goroutine was
// left behind.
//
// Fleets whose tests kill an etcd member leave etcd's peer connections to
// that member unwinding after the test has ended: a request the member
// was serving when it stopped waits for a read that etcd's connection
// wrapper re-arms with its 5 s timeout. goleak gives up after about a
// second, so the check first waits, up to leftoverSettle, for the leftovers
// to go; what is still there then is a leak.
//
// Some goroutines of a killed member never go: its raft stopped at once
// (as a crash), a request it was serving (a peer's version check, a
// watch's permission check) stays blocked on its backend until the
// process exits. They are etcd's, in etcd's code, and ignored here.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	opts = append(opts,
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver/api/etcdhttp.newPeerHandler.versionHandler.func1"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/storage/backend.(*baseReadTx).UnsafeRange"))
	goleak.VerifyTestMain(settled{m: repotest.WatchHangs(m), opts: opts}, opts...)
}

type settled struct {
	m    repotest.TestingM
	opts []goleak.Option
}

func (s settled) Run() int {
	code := s.m.Run()
	for end := time.Now().Add(leftoverSettle); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if goleak.Find(s.opts...) == nil {
			break
		}
	}
	return code
}
