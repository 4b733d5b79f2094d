// Package inference runs lip-sync models with ONNX Runtime (through
// github.com/yalue/onnxruntime_go). A model honours the contract of
// README ("Media contract"): inputs mel [B,1,80,16] and face [B,6,S,S] float32,
// output [B,3,S,S] in 0..1, inputs matched by shape, not by name.
//
// Four types, owned by the worker:
//
//   - Runtime: the loaded ONNX Runtime library and its environment. Create
//     one per process (NewRuntime) and Close it at shutdown.
//   - Model: a model file (or bytes) whose inputs and output were checked
//     against the contract (Runtime.LoadModel). It holds no ONNX Runtime
//     state, only what is needed to open sessions.
//   - Context: one avatar session's inference: an ONNX Runtime session on
//     the CPU or a CUDA GPU, with input and output tensors allocated once
//     for a fixed batch B and size S and reused by every Run, so inference
//     allocates nothing per frame. A Context is used by one goroutine at a
//     time; different Contexts run in parallel.
//   - Session: a generic session for any other model with fixed-shape
//     float32 inputs and outputs named by the caller (the face detector of
//     pkg/facedetect); it holds an environment reference like a Context.
//
// # Process-wide state
//
// onnxruntime_go keeps the ONNX Runtime environment and the handle of the
// loaded library in package variables: InitializeEnvironment works once
// per process until DestroyEnvironment, and every session uses that one
// environment. This package therefore keeps one reference count for the
// process (envRefs): each Runtime and each open Context holds a reference,
// the first one initialises the environment and the last one destroys it.
// All Runtimes of a process must use the same library file.
//
// # Finding the library
//
// NewRuntime takes, in order: RuntimeOptions.LibraryPath; the environment
// variable AVATARFLEET_ONNXRUNTIME_LIB; .tools/onnxruntime/1.24.1/
// libonnxruntime.so.1 in the nearest folder above the executable or the
// working directory that has it (scripts/setup.sh puts it there); the
// system's libonnxruntime.so.1 (dynamic linker search path).
package inference

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ORTVersion is the ONNX Runtime release whose C API matches the
// onnxruntime_go version in go.mod; scripts/setup.sh (ONNXRUNTIME_VERSION)
// installs the same one.
const ORTVersion = "1.24.1"

// LibraryEnv names the environment variable that points at the ONNX
// Runtime shared library.
const LibraryEnv = "AVATARFLEET_ONNXRUNTIME_LIB"

// RuntimeOptions configures NewRuntime. The zero value finds the library
// as the package documentation describes.
type RuntimeOptions struct {
	// LibraryPath is the ONNX Runtime shared library to load; it overrides
	// the environment and the search.
	LibraryPath string
}

// Runtime is a reference to the process's ONNX Runtime environment. Its
// methods are safe for concurrent use.
type Runtime struct {
	lib     string
	version string

	mu     sync.Mutex
	closed bool
}

// envRefs is the process-wide reference count on onnxruntime_go's
// environment (see "Process-wide state" in the package documentation).
var envRefs struct {
	mu   sync.Mutex
	refs int
	lib  string
}

// NewRuntime loads the ONNX Runtime library (once per process) and returns
// a reference to its environment.
func NewRuntime(opts RuntimeOptions) (*Runtime, error) {
	lib, err := findLibrary(opts.LibraryPath, os.Getenv, searchStarts())
	if err != nil {
		return nil, err
	}
	if err := acquireEnv(lib); err != nil {
		return nil, err
	}
	return &Runtime{lib: lib, version: ort.GetVersion()}, nil
}

// Library is the path of the loaded shared library (a bare file name when
// the dynamic linker searched for it).
func (r *Runtime) Library() string { return r.lib }

// Version is the loaded ONNX Runtime's version, e.g. "1.24.1".
func (r *Runtime) Version() string { return r.version }

// Close drops the Runtime's reference; the environment goes when the last
// Context is closed too. Close is idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return releaseEnv()
}

// hold takes a reference for a Context (or a temporary inspection
// session) if the Runtime is still open.
func (r *Runtime) hold() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("inference: runtime is closed")
	}
	return acquireEnv(r.lib)
}

func acquireEnv(lib string) error {
	envRefs.mu.Lock()
	defer envRefs.mu.Unlock()
	if envRefs.refs > 0 {
		if lib != envRefs.lib {
			return fmt.Errorf("inference: ONNX Runtime already loaded from %s in this process; cannot also load %s", envRefs.lib, lib)
		}
		envRefs.refs++
		return nil
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("inference: loading ONNX Runtime %s (run scripts/setup.sh, or set %s): %w", lib, LibraryEnv, err)
	}
	envRefs.refs, envRefs.lib = 1, lib
	return nil
}

func releaseEnv() error {
	envRefs.mu.Lock()
	defer envRefs.mu.Unlock()
	if envRefs.refs == 0 {
		return errors.New("inference: ONNX Runtime environment released more often than acquired")
	}
	envRefs.refs--
	if envRefs.refs > 0 {
		return nil
	}
	envRefs.lib = ""
	if err := ort.DestroyEnvironment(); err != nil {
		return fmt.Errorf("inference: destroying the ONNX Runtime environment: %w", err)
	}
	return nil
}

// systemLibrary is the name the dynamic linker is asked for last.
func systemLibrary() string {
	switch runtime.GOOS {
	case "darwin":
		return "libonnxruntime.dylib"
	case "windows":
		return "onnxruntime.dll"
	}
	return "libonnxruntime.so.1"
}

// toolsLibrary is where scripts/setup.sh installs the library, relative to
// the repository root.
func toolsLibrary() string {
	return filepath.Join(".tools", "onnxruntime", ORTVersion, "libonnxruntime.so.1")
}

// searchStarts are the folders whose ancestors are searched for
// toolsLibrary: the executable's and the working directory.
func searchStarts() []string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, wd)
	}
	return dirs
}

// findLibrary resolves the library path (see the package documentation).
// An explicit path or the environment variable must name an existing file.
func findLibrary(explicit string, getenv func(string) string, starts []string) (string, error) {
	for _, c := range []struct{ path, from string }{{explicit, "library path option"}, {getenv(LibraryEnv), LibraryEnv}} {
		if c.path == "" {
			continue
		}
		abs, err := filepath.Abs(c.path)
		if err != nil {
			return "", fmt.Errorf("inference: %s %q: %w", c.from, c.path, err)
		}
		if st, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("inference: ONNX Runtime library from %s: %w", c.from, err)
		} else if st.IsDir() {
			return "", fmt.Errorf("inference: ONNX Runtime library from %s: %s is a directory", c.from, abs)
		}
		return abs, nil
	}
	rel := toolsLibrary()
	for _, start := range starts {
		for dir := start; ; {
			p := filepath.Join(dir, rel)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return systemLibrary(), nil
}
