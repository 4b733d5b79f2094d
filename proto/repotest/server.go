package repotest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ServerOptions says how StartServer runs a test's server process.
type ServerOptions struct {
	// Name is used in failure messages and the log file's name.
	Name string
	// Command builds the process on freshly picked ports (FreePort); it is
	// called again when the server died of a port collision. ready reports
	// whether the server built answers.
	Command func() (cmd *exec.Cmd, ready func() bool)
	// Timeout bounds the wait until ready (default 60 s).
	Timeout time.Duration
	// Interrupt stops the server with SIGINT, and SIGKILL only after 10 s;
	// without it the server is killed at once.
	Interrupt bool
}

// StartServer runs a server process until the test ends: its output goes
// to a log file (whose path it returns, and whose tail a failed test logs),
// it waits until ready, and it starts the server again on fresh ports
// (PortAttempts times at most) when it exited because a port it was given
// was taken. Any other exit, or the timeout, fails the test.
func StartServer(tb testing.TB, opts ServerOptions) (logPath string) {
	tb.Helper()
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	for attempt := 1; ; attempt++ {
		logPath, collided := runServer(tb, opts)
		if !collided {
			return logPath
		}
		if attempt == PortAttempts {
			tb.Fatalf("%s: a port it was given was taken %d times", opts.Name, attempt)
		}
		tb.Logf("%s: a port it was given was taken meanwhile; starting it again on fresh ports", opts.Name)
	}
}

func runServer(tb testing.TB, opts ServerOptions) (logPath string, collided bool) {
	tb.Helper()
	cmd, ready := opts.Command()
	logPath = filepath.Join(tb.TempDir(), strings.ReplaceAll(opts.Name, " ", "-")+".log")
	out, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		tb.Fatalf("start %s: %v", opts.Name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	gone := false // its exit was read below
	tb.Cleanup(func() {
		if !gone {
			if opts.Interrupt {
				_ = cmd.Process.Signal(syscall.SIGINT)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-exited
				}
			} else {
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		_ = out.Close()
		if tb.Failed() {
			b, _ := os.ReadFile(logPath)
			tb.Logf("%s log (last 4 KiB):\n%s", opts.Name, tail(b, 4096))
		}
	})
	deadline := time.Now().Add(opts.Timeout)
	for {
		if ready() {
			return logPath, false
		}
		select {
		case err := <-exited:
			gone = true
			b, _ := os.ReadFile(logPath)
			if PortCollision(b) {
				return "", true
			}
			tb.Fatalf("%s exited: %v\n%s", opts.Name, err, tail(b, 4096))
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not ready after %v", opts.Name, opts.Timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
