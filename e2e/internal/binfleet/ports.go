package binfleet

import (
	"os"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// portAttempts bounds how often a process is started again on fresh ports.
const portAttempts = repotest.PortAttempts

// diedOfPortCollision reports whether p has exited on its own because a
// port it was handed was taken: FreePort only says the kernel had a port
// free a moment ago, and on a busy machine another test's process can bind
// it before ours does.
func (p *Proc) diedOfPortCollision() bool {
	if p.killed.Load() {
		return false
	}
	select {
	case <-p.done:
	default:
		return false
	}
	b, err := os.ReadFile(p.Log)
	return err == nil && repotest.PortCollision(b)
}

// forget marks a process that died of a port collision as expected to be
// gone, so Stop and Exited stay quiet about it.
func (p *Proc) forget() { p.killed.Store(true) }

// serveOnFreePorts waits until up is nil for the process in *p. When it
// dies of a port collision, start (which picks fresh ports) runs again, up
// to portAttempts times in all; any other death, or the timeout, fails the
// test. others are watched as WaitUntil watches them.
func serveOnFreePorts(t testing.TB, what string, timeout time.Duration, p **Proc, start func() *Proc, up func() error, others []*Proc) {
	t.Helper()
	attempts := 1
	deadline := time.Now().Add(timeout)
	for {
		err := up()
		if err == nil {
			return
		}
		if (*p).diedOfPortCollision() && attempts < portAttempts {
			t.Logf("%s: a port it was given was taken meanwhile; starting it again on fresh ports", (*p).Name)
			(*p).forget()
			*p = start()
			attempts++
			continue
		}
		for _, q := range append([]*Proc{*p}, others...) {
			if perr := q.Exited(); perr != nil {
				t.Fatalf("waiting for %s: %v", what, perr)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
