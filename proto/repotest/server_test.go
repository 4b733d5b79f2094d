package repotest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestStartServerStartsAgainAfterACollision: a server that dies saying a
// port was taken is started again (Command is called anew); one that
// comes up is left running until the test ends, its output in the log.
func TestStartServerStartsAgainAfterACollision(t *testing.T) {
	calls := 0
	var running *exec.Cmd
	log := StartServer(t, ServerOptions{
		Name: "toy server",
		Command: func() (*exec.Cmd, func() bool) {
			calls++
			if calls == 1 {
				cmd := exec.Command("sh", "-c", "echo 'listen tcp 127.0.0.1:1: bind: address already in use'; exit 1")
				return cmd, func() bool { return false }
			}
			running = exec.Command("sh", "-c", "echo serving; exec sleep 60")
			return running, func() bool {
				b, _ := os.ReadFile(running.Stdout.(*os.File).Name())
				return strings.Contains(string(b), "serving")
			}
		},
		Interrupt: true,
	})
	if calls != 2 {
		t.Fatalf("Command called %d times, want 2", calls)
	}
	b, err := os.ReadFile(log)
	if err != nil || !strings.Contains(string(b), "serving") {
		t.Fatalf("log %s: %q (%v)", log, b, err)
	}
	if running.ProcessState != nil {
		t.Fatal("the server is not running")
	}
}
