// Command ortcheck is scripts/setup.sh's self-check of the ONNX Runtime
// library: it loads the shared library the way the worker does (dlopen),
// resolves OrtGetApiBase and asks it for its version and for the C API of
// that release. It uses only the standard library and cgo, so setup can run
// it with GOWORK=off before any module is downloaded; building it also proves
// that cgo and the C compiler work.
//
//	go run main.go LIBRARY VERSION
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

// The first two members of OrtApiBase (onnxruntime_c_api.h); stable across releases.
typedef struct {
	const void *(*GetApi)(uint32_t version);
	const char *(*GetVersionString)(void);
} ortApiBase;

typedef const ortApiBase *(*getApiBaseFn)(void);

static void *openLib(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static const char *lastError(void) { const char *e = dlerror(); return e ? e : "unknown error"; }
static const ortApiBase *apiBase(void *h) {
	getApiBaseFn f = (getApiBaseFn)dlsym(h, "OrtGetApiBase");
	return f ? f() : NULL;
}
static const char *versionOf(const ortApiBase *b) { return b->GetVersionString(); }
static int hasApi(const ortApiBase *b, uint32_t v) { return b->GetApi(v) != NULL; }
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: ortcheck LIBRARY VERSION")
		os.Exit(2)
	}
	if err := check(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintf(os.Stderr, "ONNX Runtime: %v\n", err)
		os.Exit(1)
	}
}

func check(lib, want string) error {
	path := C.CString(lib)
	defer C.free(unsafe.Pointer(path))
	h := C.openLib(path)
	if h == nil {
		return fmt.Errorf("load %s: %s", lib, C.GoString(C.lastError()))
	}
	base := C.apiBase(h)
	if base == nil {
		return fmt.Errorf("%s has no OrtGetApiBase", lib)
	}
	got := C.GoString(C.versionOf(base))
	if got != want {
		return fmt.Errorf("%s is version %s, want %s", lib, got, want)
	}
	// The C API version of release 1.N is N.
	parts := strings.Split(want, ".")
	if len(parts) < 2 {
		return fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", want)
	}
	api, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return fmt.Errorf("version %q: %w", want, err)
	}
	if C.hasApi(base, C.uint32_t(api)) == 0 {
		return fmt.Errorf("%s does not offer C API version %d", lib, api)
	}
	return nil
}
