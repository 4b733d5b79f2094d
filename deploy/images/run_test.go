package images_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/deploy/images"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// controlPlane is a control plane running in a sandbox.
type controlPlane struct {
	url, etcd, nats string
	cmd             *exec.Cmd
	out             *bytes.Buffer
	done            chan error
}

// portAttempts bounds how often a process is started again on fresh
// ports: freePort only says a port was free a moment ago, and another
// test's process can bind it first on a busy machine.
const portAttempts = repotest.PortAttempts

// diedOfPortCollision reports whether err (from poll) says the process
// exited, and its output says a port was in use.
func diedOfPortCollision(err error, out *bytes.Buffer) bool {
	return err != nil && strings.Contains(err.Error(), "the process exited") && repotest.PortCollision(out.Bytes())
}

// startControlPlane runs the control plane's embedded default in the
// sandbox on free ports and waits until /healthz answers 200.
func startControlPlane(t *testing.T, sb *sandbox, entry, env []string) *controlPlane {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cp := launchControlPlane(t, sb, entry, env)
		err := poll(90*time.Second, cp.done, func() error { return get(cp.url+"/healthz", "", nil) })
		if err == nil {
			return cp
		}
		if attempt < portAttempts && diedOfPortCollision(err, cp.out) {
			t.Logf("controlplane in the image: a port it was given was taken meanwhile; starting it again on fresh ports")
			continue
		}
		t.Fatalf("controlplane in the image: /healthz never answered 200 (%v)\n%s", err, tail(cp.out, 4000))
	}
}

// launchControlPlane starts the control plane on fresh free ports.
func launchControlPlane(t *testing.T, sb *sandbox, entry, env []string) *controlPlane {
	t.Helper()
	httpPort := freePort(t)
	cp := &controlPlane{
		url:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		etcd: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		nats: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		out:  &bytes.Buffer{},
		done: make(chan error, 1),
	}
	args := append(slices.Clone(entry), "--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--embedded-etcd-listen", cp.etcd, "--embedded-nats-listen", cp.nats)
	cp.cmd = sb.command(context.Background(), args...)
	cp.cmd.Env = append(cp.cmd.Env, env...)
	cp.cmd.Stdout, cp.cmd.Stderr = cp.out, cp.out
	if err := cp.cmd.Start(); err != nil {
		t.Fatalf("start controlplane in the image: %v", err)
	}
	go func() { cp.done <- cp.cmd.Wait() }()
	t.Cleanup(func() { // a failed test still ends the process (stop drained done: no-op)
		select {
		case <-cp.done:
		default:
			_ = syscall.Kill(-cp.cmd.Process.Pid, syscall.SIGKILL)
			<-cp.done
		}
	})
	return cp
}

// stop sends SIGTERM and waits for a clean exit.
func (cp *controlPlane) stop(t *testing.T) {
	t.Helper()
	if err := stopProc(cp.cmd, cp.done); err != nil {
		t.Errorf("controlplane in the image after SIGTERM: %v\n%s", err, tail(cp.out, 2000))
	}
	cp.done <- nil // for the cleanup
}

// stopProc sends SIGTERM to cmd's process group and waits up to 30 s.
func stopProc(cmd *exec.Cmd, done chan error) error {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("no exit 30 s after SIGTERM (killed): %v", <-done)
	}
}

// poll calls f every 250 ms until it returns nil, the timeout passes or
// the process behind exited reports.
func poll(timeout time.Duration, exited chan error, f func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err // for whoever waits next
			return fmt.Errorf("the process exited: %v (last: %v)", err, last)
		case <-time.After(250 * time.Millisecond):
		}
		if last = f(); last == nil {
			return nil
		}
	}
	return last
}

// get GETs url with an optional bearer key and decodes JSON into v.
func get(url, key string, v any) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// workerJoins runs the control plane of its image and, one after the
// other, a worker of each worker image (--gpus cpu), each in its own
// read-only sandbox, sharing one data directory (the embedded default's
// credentials and development CA), and waits until the API lists the
// worker as active: its image's ONNX Runtime loaded, the default model
// generated, espeak-ng found, all inside the images.
func workerJoins(t *testing.T, cpImg *runnable, workers map[string]*runnable) {
	t.Helper()
	data := t.TempDir()
	if err := os.Chown(data, images.UID, images.UID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o700); err != nil {
		t.Fatal(err)
	}
	const key = "imagetest-admin-key-0123456789"
	cpSB := mountSandbox(t, cpImg.layers, cpImg.env, data)
	cp := startControlPlane(t, cpSB, cpImg.entry, []string{"AVATARFLEET_API_KEY=" + key})
	defer cp.stop(t)

	for _, target := range slices.Sorted(maps.Keys(workers)) {
		runWorker(t, cp, key, data, target, workers[target])
	}
}

// ortVersions is the ONNX Runtime each worker image carries.
var ortVersions = map[string]string{images.WorkerCPU: "1.24.1", images.WorkerCUDA: "1.29.0"}

// runWorker starts a worker of image wImg against cp, waits until it is
// active, and stops it (SIGTERM: it drains).
func runWorker(t *testing.T, cp *controlPlane, key, data, target string, wImg *runnable) {
	t.Helper()
	wSB := mountSandbox(t, wImg.layers, wImg.env, data)
	id := "image-" + target
	for attempt := 1; ; attempt++ {
		w, done, out := launchWorker(t, wSB, cp, id, wImg)
		var state struct {
			State string `json:"state"`
		}
		err := poll(90*time.Second, done, func() error {
			if err := get(cp.url+"/v1/workers/"+id, key, &state); err != nil {
				return err
			}
			if state.State != "active" {
				return fmt.Errorf("worker %s is %q", id, state.State)
			}
			return nil
		})
		if attempt < portAttempts && diedOfPortCollision(err, out) {
			t.Logf("worker of the %s image: a port it was given was taken meanwhile; starting it again on fresh ports", target)
			continue
		}
		serr := stopProc(w, done)
		if err != nil {
			t.Fatalf("worker of the %s image never became active: %v\nworker:\n%s\ncontrol plane:\n%s",
				target, err, tail(out, 4000), tail(cp.out, 2000))
		}
		if serr != nil {
			t.Errorf("worker in the image after SIGTERM: %v\n%s", serr, tail(out, 2000))
		}
		for _, want := range []string{"media engine ready", "onnxruntime=" + images.ORTDir + "/libonnxruntime.so.1", "onnxruntime_version=" + ortVersions[target]} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("worker log lacks %q:\n%s", want, tail(out, 4000))
			}
		}
		return
	}
}

// launchWorker starts worker id of image wImg in sandbox sb against cp on
// fresh free ports.
func launchWorker(t *testing.T, sb *sandbox, cp *controlPlane, id string, wImg *runnable) (*exec.Cmd, chan error, *bytes.Buffer) {
	t.Helper()
	mediaPort := repotest.FreePort(t, "udp")
	args := append(slices.Clone(wImg.entry), "--id", id,
		"--etcd", "http://"+cp.etcd, "--nats", "nats://"+cp.nats,
		"--grpc-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--media-port", fmt.Sprint(mediaPort), "--public-ip", "127.0.0.1",
		"--gpus", "cpu", "--drain-timeout", "5s")
	w := sb.command(context.Background(), args...)
	out := &bytes.Buffer{}
	w.Stdout, w.Stderr = out, out
	if err := w.Start(); err != nil {
		t.Fatalf("start worker %s: %v", id, err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	return w, done, out
}

// workerHelp runs `worker --help` in the sandbox: it must start (every
// library found) and list its flags.
func workerHelp(t *testing.T, sb *sandbox, entry []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := sb.command(ctx, append(slices.Clone(entry), "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("worker --help in the image: %v\n%s", err, out)
	}
	for _, f := range []string{"-onnxruntime-lib", "-media-port", "-data-dir"} {
		if !bytes.Contains(out, []byte(f)) {
			t.Errorf("worker --help in the image does not list %s:\n%s", f, out)
		}
	}
}

// checkUser: inside the image the process is the named non-root user, the
// root filesystem is read-only and /tmp and the data directory are not.
func checkUser(t *testing.T, sb *sandbox) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := sb.command(ctx, "/usr/bin/id", "-un").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "avatarfleet" {
		t.Errorf("id -un in the image: %q (%v), want avatarfleet (uid %d in /etc/passwd)", out, err, images.UID)
	}
	for _, c := range []struct {
		path     string
		writable bool
	}{{"/probe", false}, {"/usr/local/bin/probe", false}, {"/tmp/probe", true}, {images.DataDir + "/probe", true}} {
		out, err := sb.command(ctx, "/usr/bin/touch", c.path).CombinedOutput()
		if (err == nil) != c.writable {
			t.Errorf("touch %s in the image: %v %s, want writable=%v", c.path, err, out, c.writable)
		}
	}
}
