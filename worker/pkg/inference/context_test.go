package inference

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func TestRunAllocatesNothing(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	c := newContext(t, m, ContextOptions{Batch: 2})
	mel := append(voiceMel(loud), voiceMel(silence)...)
	one := syntheticFace(c.Size())
	face := append(append([]float32(nil), one...), one...)
	out := make([]float32, c.OutLen())
	var runErr error
	allocs := testing.AllocsPerRun(50, func() {
		if err := c.Run(mel, face, out); err != nil {
			runErr = err
		}
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	if allocs != 0 {
		t.Errorf("Context.Run allocates %v times per call; want 0", allocs)
	}
}

// Two sessions' Contexts run at the same time (run with -race) and give
// what they give alone.
func TestContextsRunConcurrently(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	s := DefaultSize
	face := syntheticFace(s)
	levels := []float32{loud, medium}
	want := make([][]float32, len(levels))
	ctxs := make([]*Context, len(levels))
	for i, l := range levels {
		ctxs[i] = newContext(t, m, ContextOptions{})
		want[i] = runOne(t, ctxs[i], voiceMel(l), face)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(levels))
	for i := range levels {
		wg.Go(func() {
			mel := voiceMel(levels[i])
			out := make([]float32, ctxs[i].OutLen())
			for n := range 30 {
				if err := ctxs[i].Run(mel, face, out); err != nil {
					errs <- err
					return
				}
				if d := maxDiff(out, want[i], s, 0, 1); d != 0 {
					errs <- fmt.Errorf("context %d, run %d: output differs from a lone run by %g", i, n, d)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRunChecksLengthsAndClose(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	c, err := m.NewContext(ContextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mel, face, out := voiceMel(loud), syntheticFace(c.Size()), make([]float32, c.OutLen())
	if err := c.Run(mel[1:], face, out); err == nil || !strings.Contains(err.Error(), "want 1280/55296/27648") {
		t.Errorf("short mel: %v; want a length error", err)
	}
	if err := c.Run(mel, face, out[:10]); err == nil {
		t.Error("short out: no error")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Run(mel, face, out); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Run after Close: %v; want a closed error", err)
	}
}

func TestContextOptions(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	c := newContext(t, m, ContextOptions{Batch: 3, IntraOpThreads: 2})
	if c.Batch() != 3 || c.Size() != 96 || c.Device() != CPU() {
		t.Errorf("Batch, Size, Device = %d, %d, %v", c.Batch(), c.Size(), c.Device())
	}
	for _, opts := range []ContextOptions{{Size: 128}, {Batch: -1}, {IntraOpThreads: -2}} {
		if c, err := m.NewContext(opts); err == nil {
			c.Close()
			t.Errorf("NewContext(%+v) succeeded; want an error", opts)
		} else {
			t.Logf("%+v: %v", opts, err)
		}
	}
}

// The library set up here is CPU-only: asking for a GPU fails with a
// DeviceError that says so (on a machine with a CUDA build it runs).
func TestGPUContext(t *testing.T) {
	m := loadDefault(t, newRuntime(t))
	c, err := m.NewContext(ContextOptions{Device: GPU(0)})
	if err == nil {
		defer c.Close()
		runOne(t, c, voiceMel(loud), syntheticFace(c.Size()))
		t.Logf("CUDA execution provider available: ran on %v", c.Device())
		return
	}
	var de *DeviceError
	if !errors.As(err, &de) || de.Device != GPU(0) || !strings.Contains(err.Error(), "gpu0") {
		t.Fatalf("error %v; want a *DeviceError for gpu0", err)
	}
	t.Logf("as expected here: %v", err)
}

func TestRuntimeLifecycle(t *testing.T) {
	rt := newRuntime(t)
	if rt.Version() != ORTVersion {
		t.Logf("loaded ONNX Runtime %s (expected %s; fine if the C API matches)", rt.Version(), ORTVersion)
	}
	m := loadDefault(t, rt)
	// A second Runtime shares the environment; the same library is fine,
	// another one is refused while the first is open.
	rt2, err := NewRuntime(RuntimeOptions{LibraryPath: rt.Library()})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt2.Close(); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(other, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rt3, err := NewRuntime(RuntimeOptions{LibraryPath: other}); err == nil {
		rt3.Close()
		t.Error("a second library loaded; want an error")
	}
	// A Context outlives its Runtime's Close; new work is refused.
	c, err := m.NewContext(ContextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	runOne(t, c, voiceMel(loud), syntheticFace(c.Size()))
	if _, err := m.NewContext(ContextOptions{}); err == nil {
		t.Error("NewContext on a closed runtime succeeded")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// And the environment comes back for a new Runtime.
	loadDefault(t, newRuntime(t))
}

func TestLoadingABadLibraryFails(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(bad, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := NewRuntime(RuntimeOptions{LibraryPath: bad})
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "scripts/setup.sh") {
		t.Errorf("error %v; want one naming %s and the set-up script", err, bad)
	}
	if _, err := NewRuntime(RuntimeOptions{LibraryPath: filepath.Join(t.TempDir(), "missing.so")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing library: %v; want os.ErrNotExist", err)
	}
}

func TestFindLibrary(t *testing.T) {
	root := t.TempDir()
	lib := filepath.Join(root, toolsLibrary())
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "worker", "pkg", "inference")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	explicit := filepath.Join(root, "explicit.so")
	fromEnv := filepath.Join(root, "env.so")
	for _, p := range []string{explicit, fromEnv} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == LibraryEnv {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name, explicit, env string
		starts              []string
		want                string
	}{
		{"option first", explicit, fromEnv, []string{deep}, explicit},
		{"then the environment", "", fromEnv, []string{deep}, fromEnv},
		{"then .tools above a start folder", "", "", []string{t.TempDir(), deep}, lib},
		{"then the system", "", "", []string{t.TempDir()}, systemLibrary()},
	} {
		got, err := findLibrary(tc.explicit, env(tc.env), tc.starts)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := findLibrary("", env(filepath.Join(root, "nope.so")), nil); err == nil || !strings.Contains(err.Error(), LibraryEnv) {
		t.Errorf("missing file from the environment: %v; want an error naming %s", err, LibraryEnv)
	}
	if _, err := findLibrary(root, env(""), nil); err == nil {
		t.Error("a directory as the library: no error")
	}
}

// scripts/setup.sh installs the ONNX Runtime this package looks for.
func TestSetupScriptVersion(t *testing.T) {
	script, err := os.ReadFile("../../../scripts/setup.sh")
	if err != nil {
		t.Fatalf("read the set-up script (the repository always has it): %v", err)
	}
	m := regexp.MustCompile(`(?m)^ONNXRUNTIME_VERSION=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("scripts/setup.sh sets no ONNXRUNTIME_VERSION")
	}
	if string(m[1]) != ORTVersion {
		t.Errorf("scripts/setup.sh installs ONNX Runtime %s; the package expects %s", m[1], ORTVersion)
	}
}
