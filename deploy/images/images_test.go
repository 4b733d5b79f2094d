package images_test

import (
	"archive/tar"
	"crypto/sha256"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/avatarfleet/avatarfleet/deploy/images"
)

// Files every image carries besides its binaries: the user, CA
// certificates, espeak-ng and its voices, the loader and ldd.
var common = []string{
	"/etc/passwd", "/etc/group", "/etc/ssl/certs/ca-certificates.crt", "/usr/bin/espeak-ng",
	"/usr/lib/x86_64-linux-gnu/espeak-ng-data/phontab", "/usr/bin/ldd", "/usr/lib/x86_64-linux-gnu/libc.so.6",
	"/usr/local/bin/avatarctl",
}

// imageCase is what one image of `make images` must be.
type imageCase struct {
	target     string
	entrypoint string
	ports      []string
	env        []string
	files      []string
	// bins are the binaries copied from bin/ (compared byte for byte, so a
	// stale image fails).
	bins []string
	// libs are checked with ldd inside the image; allowMissing are the
	// libraries the node supplies (CUDA provider only).
	libs         []string
	allowMissing map[string][]string
}

var cases = []imageCase{{
	target:     images.ControlPlane,
	entrypoint: "/usr/local/bin/controlplane",
	ports:      []string{"8080/tcp"},
	env:        []string{"AVATARFLEET_DATA_DIR=/var/lib/avatarfleet", "HOME=/var/lib/avatarfleet"},
	bins:       []string{"controlplane", "avatarctl"},
	libs:       []string{"/usr/local/bin/controlplane", "/usr/local/bin/avatarctl"},
}, {
	target:     images.WorkerCPU,
	entrypoint: "/usr/local/bin/worker",
	ports:      []string{"50000/udp", "9090/tcp", "9091/tcp"},
	env: []string{"AVATARFLEET_DATA_DIR=/var/lib/avatarfleet",
		"AVATARFLEET_ONNXRUNTIME_LIB=/opt/onnxruntime/lib/libonnxruntime.so.1"},
	files: []string{"/opt/onnxruntime/lib/libonnxruntime.so.1", "/opt/onnxruntime/lib/libonnxruntime.so",
		"/usr/lib/x86_64-linux-gnu/libvpx.so.7", "/usr/lib/x86_64-linux-gnu/libopus.so.0",
		"/usr/lib/x86_64-linux-gnu/libopusfile.so.0"},
	bins: []string{"worker", "avatarctl"},
	libs: []string{"/usr/local/bin/worker", "/opt/onnxruntime/lib/libonnxruntime.so.1"},
}, {
	target:     images.WorkerCUDA,
	entrypoint: "/usr/local/bin/worker",
	ports:      []string{"50000/udp", "9090/tcp", "9091/tcp"},
	env: []string{"AVATARFLEET_DATA_DIR=/var/lib/avatarfleet",
		"AVATARFLEET_ONNXRUNTIME_LIB=/opt/onnxruntime/lib/libonnxruntime.so.1",
		"LD_LIBRARY_PATH=/opt/onnxruntime/lib:/opt/cuda/lib", "NVIDIA_VISIBLE_DEVICES=all",
		"NVIDIA_DRIVER_CAPABILITIES=compute,utility"},
	files: []string{"/opt/onnxruntime/lib/libonnxruntime.so.1", "/opt/onnxruntime/lib/libonnxruntime_providers_shared.so",
		"/opt/onnxruntime/lib/libonnxruntime_providers_cuda.so", "/opt/onnxruntime/lib/libcudnn.so",
		"/usr/share/doc/onnxruntime/LICENSE", "/opt/cuda/lib"},
	bins: []string{"worker", "avatarctl"},
	libs: []string{"/usr/local/bin/worker", "/opt/onnxruntime/lib/libonnxruntime.so.1",
		"/opt/onnxruntime/lib/libonnxruntime_providers_shared.so", "/opt/onnxruntime/lib/libonnxruntime_providers_cuda.so"},
	// What the NVIDIA container runtime (driver) and the CUDA libraries
	// mounted at /opt/cuda/lib supply on a GPU node; nothing else may miss.
	allowMissing: map[string][]string{"/opt/onnxruntime/lib/libonnxruntime_providers_cuda.so": {
		"libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudart.so.13", "libcuda.so.1"}},
}}

// TestImages reads each image `make images` wrote back, checks its
// configuration and files, then runs its root filesystem in a chroot with a
// read-only root: ldd finds every library, the control plane serves
// /healthz with its embedded default, the worker's --help starts. Last, a
// worker of each worker image (on the CPU) joins a control plane of the
// controlplane image (sharing the data directory, as the embedded default
// does).
func TestImages(t *testing.T) {
	root := repoRoot(t)
	head := gitHead(root)
	// The root filesystem layer is the same in every image: unpacked once.
	var base v1.Hash
	baseDir := t.TempDir()
	baseHdrs := map[string]*tar.Header{}
	ran := map[string]*runnable{}
	for _, c := range cases {
		appDir := t.TempDir() // kept for the last subtest
		t.Run(c.target, func(t *testing.T) {
			path := filepath.Join(root, "out", "images", c.target+".tar")
			img, ann := readArchive(t, path)
			cf := checkConfig(t, c, img, ann, head)
			layers, err := img.Layers()
			if err != nil || len(layers) != 2 {
				t.Fatalf("layers: %d (%v), want 2", len(layers), err)
			}
			d, err := layers[0].Digest()
			if err != nil {
				t.Fatal(err)
			}
			if base == (v1.Hash{}) {
				extractLayer(t, layers[0], baseDir, baseHdrs)
				base = d
			} else if d != base {
				t.Fatalf("root filesystem layer %s, but the first image's is %s: want one shared layer", d, base)
			}
			hdrs := maps.Clone(baseHdrs)
			extractLayer(t, layers[1], appDir, hdrs)
			checkFiles(t, c, root, appDir, hdrs, cf.Created.Time)
			r := &runnable{layers: []string{baseDir, appDir}, env: cf.Config.Env, entry: cf.Config.Entrypoint}
			sb := mountSandbox(t, r.layers, r.env, "")
			checkUser(t, sb)
			for _, lib := range c.libs {
				missing := sb.ldd(t, lib)
				if want := c.allowMissing[lib]; !sameSet(missing, want) {
					t.Errorf("ldd %s in %s: missing %v, want missing only %v", lib, c.target, missing, want)
				}
			}
			if c.target == images.ControlPlane {
				cp := startControlPlane(t, sb, r.entry, nil)
				cp.stop(t)
			} else {
				workerHelp(t, sb, r.entry)
			}
			if !t.Failed() {
				ran[c.target] = r
			}
		})
	}
	t.Run("workers join controlplane", func(t *testing.T) {
		workers := map[string]*runnable{images.WorkerCPU: ran[images.WorkerCPU], images.WorkerCUDA: ran[images.WorkerCUDA]}
		if ran[images.ControlPlane] == nil || workers[images.WorkerCPU] == nil || workers[images.WorkerCUDA] == nil {
			t.Fatal("needs the controlplane, worker-cpu and worker-cuda subtests to pass first")
		}
		workerJoins(t, ran[images.ControlPlane], workers)
	})
}

// runnable is an unpacked image: its layer directories (bottom first),
// environment and entrypoint.
type runnable struct {
	layers, env, entry []string
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func checkConfig(t *testing.T, c imageCase, img v1.Image, ann map[string]string, head string) *v1.ConfigFile {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("media types %s / %s, want OCI", m.MediaType, m.Config.MediaType)
	}
	if len(m.Layers) != 2 {
		t.Errorf("%d layers, want 2 (root filesystem, application)", len(m.Layers))
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if !slices.Equal(cfg.Entrypoint, []string{c.entrypoint}) {
		t.Errorf("entrypoint %q, want [%q]", cfg.Entrypoint, c.entrypoint)
	}
	if cfg.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root)", cfg.User)
	}
	var ports []string
	for p := range cfg.ExposedPorts {
		ports = append(ports, p)
	}
	if !sameSet(ports, c.ports) {
		t.Errorf("exposed ports %v, want %v", ports, c.ports)
	}
	for _, e := range c.env {
		if !slices.Contains(cfg.Env, e) {
			t.Errorf("env %v lacks %s", cfg.Env, e)
		}
	}
	for _, v := range []string{images.DataDir, "/tmp"} {
		if _, ok := cfg.Volumes[v]; !ok {
			t.Errorf("volumes %v lack %s (the only writable paths)", cfg.Volumes, v)
		}
	}
	l := cfg.Labels
	created := l["org.opencontainers.image.created"]
	if want := cf.Created.UTC().Format(time.RFC3339); created != want {
		t.Errorf("label created %q, config created %q", created, want)
	}
	if !strings.HasPrefix(l["org.opencontainers.image.source"], "https://") {
		t.Errorf("label source %q, want an https URL", l["org.opencontainers.image.source"])
	}
	if v := l["org.opencontainers.image.version"]; v == "" || ann["org.opencontainers.image.ref.name"] != v {
		t.Errorf("label version %q, index ref.name %q: want the same, non-empty", v, ann["org.opencontainers.image.ref.name"])
	}
	rev := l["org.opencontainers.image.revision"]
	switch {
	case head != "" && rev != head:
		t.Errorf("label revision %q, but HEAD is %s: the image is stale, run `make images`", rev, head)
	case head == "" && rev != "unknown":
		t.Errorf("label revision %q without a git checkout, want \"unknown\"", rev)
	}
	if l["org.opencontainers.image.title"] != "avatarfleet-"+c.target {
		t.Errorf("label title %q", l["org.opencontainers.image.title"])
	}
	return cf
}

func checkFiles(t *testing.T, c imageCase, root, appDir string, hdrs map[string]*tar.Header, created time.Time) {
	t.Helper()
	for _, f := range append(slices.Clone(common), c.files...) {
		if _, ok := hdrs[f]; !ok {
			t.Errorf("%s: no %s in the image", c.target, f)
		}
	}
	for name, h := range hdrs {
		if !h.ModTime.Equal(created) {
			t.Errorf("%s: %s has time %s, want the pinned %s", c.target, name, h.ModTime, created)
			break
		}
	}
	d := hdrs[images.DataDir]
	if d == nil || d.Uid != images.UID || d.Mode&0o777 != 0o700 {
		t.Errorf("data directory %s: %+v, want owned by %d, mode 0700", images.DataDir, d, images.UID)
	}
	if tmp := hdrs["/tmp"]; tmp == nil || tmp.Mode&0o1777 != 0o1777 {
		t.Errorf("/tmp: %+v, want mode 1777", tmp)
	}
	for _, b := range c.bins {
		want, err := os.ReadFile(filepath.Join(root, "bin", b))
		if err != nil {
			t.Fatalf("%v: run `make build` first", err)
		}
		got, err := os.ReadFile(filepath.Join(appDir, "usr/local/bin", b))
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Errorf("%s: /usr/local/bin/%s differs from bin/%s: the image is stale, run `make images`", c.target, b, b)
		}
	}
}
