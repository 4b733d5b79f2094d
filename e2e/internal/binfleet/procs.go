//go:build linux

package binfleet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// stopGrace is how long Stop waits after SIGTERM before it kills the
// process group.
const stopGrace = 30 * time.Second

// RepoRoot is the folder holding go.work, above the test's directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	return repotest.Root(t)
}

// BuiltBinary is bin/<name> of the repository, which `make build` writes.
func BuiltBinary(t testing.TB, root, name string) string {
	t.Helper()
	p := filepath.Join(root, "bin", name)
	if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is missing or not executable: run `make build` first (`make test` builds before it tests)", p)
	}
	return p
}

// FreePort is a port the kernel had free a moment ago; network is "tcp"
// (on 127.0.0.1) or "udp".
func FreePort(t testing.TB, network string) int {
	t.Helper()
	return repotest.FreePort(t, network)
}

// Proc is one started binary; its output goes to a log file.
type Proc struct {
	Name string
	// Log is the file holding the process's stdout and stderr.
	Log string

	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	once   sync.Once
	killed atomic.Bool
}

// StartProc starts bin with args in dir, in its own process group, with
// the environment cleared of AVATARFLEET_* and given env. t.Cleanup stops
// it (see Stop) and, if the test failed, logs the tail of its output.
func StartProc(t testing.TB, name, dir, bin string, args, env []string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AVATARFLEET_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- last lines of %s's output (%s) ---\n%s", name, logPath, Tail(logPath, 60))
		}
	})
	return p
}

// Stop ends the process as an operator would: SIGTERM and a wait; after
// 30 s it kills the process group. It returns an error for an exit other
// than a clean one or SIGTERM's, or for a process that had to be killed.
// Only the first call acts; later calls return nil.
func (p *Proc) Stop() error {
	var err error
	p.once.Do(func() {
		select {
		case <-p.done:
			if p.err != nil && !p.killed.Load() {
				err = fmt.Errorf("%s had exited before Stop: %w", p.Name, p.err)
			}
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil && !isSignalExit(p.err) {
				err = fmt.Errorf("%s exited with %w after SIGTERM", p.Name, p.err)
			}
		case <-time.After(stopGrace):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			err = fmt.Errorf("%s did not stop within %v of SIGTERM; killed its process group", p.Name, stopGrace)
		}
	})
	return err
}

// Exited is an error describing a process that ended before it was asked
// to, with the tail of its output; nil while it runs or after Kill.
func (p *Proc) Exited() error {
	if p.killed.Load() {
		return nil
	}
	select {
	case <-p.done:
		return fmt.Errorf("%s exited early: %v; its output:\n%s", p.Name, p.err, Tail(p.Log, 40))
	default:
		return nil
	}
}

func isSignalExit(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return true
		}
	}
	return false
}

// Tail is the last n lines of a file.
func Tail(path string, n int) string { return TailWithout(path, n) }

// TailWithout is the last n lines of a file, leaving out lines that hold
// any of skip.
func TailWithout(path string, n int, skip ...string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
next:
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		for _, s := range skip {
			if strings.Contains(l, s) {
				continue next
			}
		}
		lines = append(lines, l)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitUntil calls check every 200 ms until it returns nil, one of procs
// dies, or the timeout passes (then it fails the test).
func WaitUntil(t testing.TB, what string, timeout time.Duration, procs []*Proc, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		for _, p := range procs {
			if perr := p.Exited(); perr != nil {
				t.Fatalf("waiting for %s: %v", what, perr)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Kill ends the process as a crash would: SIGKILL to its process group (no
// shutdown, no drain, no lease revoke), and waits until it has exited. It
// returns when the kill was sent; Stop and Exited are quiet about it later.
func (p *Proc) Kill() time.Time {
	p.killed.Store(true)
	at := time.Now()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return at
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }
