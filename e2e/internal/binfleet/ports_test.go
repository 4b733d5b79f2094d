package binfleet

import (
	"errors"
	"testing"
	"time"
)

// TestServeOnFreePortsStartsAgainAfterACollision: a process that dies of
// "address already in use" is started again; the second one serves.
func TestServeOnFreePortsStartsAgainAfterACollision(t *testing.T) {
	starts := 0
	start := func() *Proc {
		starts++
		if starts == 1 {
			return StartProc(t, "collides", t.TempDir(), "/bin/sh",
				[]string{"-c", "echo 'listen tcp 127.0.0.1:1: bind: address already in use'; exit 1"}, nil)
		}
		return StartProc(t, "serves", t.TempDir(), "/bin/sh", []string{"-c", "exec sleep 30"}, nil)
	}
	p := start()
	<-p.done // the first one has died before the wait begins
	serveOnFreePorts(t, "the process", 10*time.Second, &p, start, func() error {
		if p.Name != "serves" {
			return errors.New("not the second process yet")
		}
		return nil
	}, nil)
	if starts != 2 {
		t.Fatalf("started %d times, want 2", starts)
	}
	if err := p.Exited(); err != nil {
		t.Fatalf("second process: %v", err)
	}
}
