// Package images assembles the project's container images without a
// container daemon: OCI image layouts, each written as one tar file (an
// "oci-archive"), made with go-containerregistry from a Debian root
// filesystem (scripts/rootfs.sh) and the binaries `make build` writes.
//
// Every image has two layers: the root filesystem (shared by all images,
// so stored once in a registry) and the application layer (binaries, the
// ONNX Runtime library of the variant, the data directory). Every time in
// them, and the image's creation time, is Options.Created, so equal inputs
// give images with equal digests.
package images

import (
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// The images this package builds.
const (
	ControlPlane = "controlplane"
	WorkerCPU    = "worker-cpu"
	WorkerCUDA   = "worker-cuda"
)

// Targets lists every image, in build order.
var Targets = []string{ControlPlane, WorkerCPU, WorkerCUDA}

// Paths and identity inside the images.
const (
	// UID and GID of the user every image runs as.
	UID = 65532
	// DataDir is the one writable directory besides /tmp: mount a volume.
	DataDir = "/var/lib/avatarfleet"
	// BinDir holds the binaries.
	BinDir = "/usr/local/bin"
	// ORTDir holds the ONNX Runtime libraries of a worker image.
	ORTDir = "/opt/onnxruntime/lib"
	// CUDALibDir is where the CUDA 13 runtime, cuBLAS, cuRAND and cuDNN 9
	// are looked for in the CUDA image: a volume, or the layer of
	// Options.CUDALibs.
	CUDALibDir = "/opt/cuda/lib"
	// MediaPort is the worker's default UDP media port.
	MediaPort = 50000
)

// CUDALibs are the ONNX Runtime libraries Options.ORTCUDA must hold.
var CUDALibs = []string{"libonnxruntime.so", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"}

// Options says what to build from what.
type Options struct {
	// RootFS is the root filesystem directory (scripts/rootfs.sh prints it).
	RootFS string
	// BinDir holds controlplane, worker and avatarctl.
	BinDir string
	// ORTCPU is the CPU ONNX Runtime library (libonnxruntime.so.1, 1.24.1);
	// needed for WorkerCPU.
	ORTCPU string
	// ORTCUDA is a directory with CUDALibs (ONNX Runtime 1.29.0, CUDA 13)
	// and its LICENSE; needed for WorkerCUDA.
	ORTCUDA string
	// CUDALibs, optional, is a directory whose files become an extra layer
	// at CUDALibDir in the CUDA image (CUDA runtime, cuBLAS, cuDNN); empty:
	// they are mounted at run time.
	CUDALibs string
	// OutDir receives <target>.tar for each target.
	OutDir string
	// Targets to build (see Targets).
	Targets []string
	// Created is the pinned time of every file and of the image.
	Created time.Time
	// Version (the image tag), Revision (git commit) and Source (the
	// repository URL) become org.opencontainers.image.* labels.
	Version  string
	Revision string
	Source   string
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

var (
	tagRe      = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	revisionRe = regexp.MustCompile(`^[0-9a-f]{7,64}$|^unknown$`)
	minCreated = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	maxCreated = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// OptionError is an invalid option: Field names the Options field.
type OptionError struct {
	Field string
	Err   error
}

func (e *OptionError) Error() string { return e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func bad(field string, err error) error { return &OptionError{Field: field, Err: err} }

// Validate checks every option and that the inputs each target needs
// exist. Its errors are *OptionError.
func (o Options) Validate() error {
	if len(o.Targets) == 0 {
		return bad("Targets", fmt.Errorf("no target (want some of %v)", Targets))
	}
	for i, t := range o.Targets {
		if !slices.Contains(Targets, t) {
			return bad("Targets", fmt.Errorf("unknown target %q (want some of %v)", t, Targets))
		}
		if slices.Contains(o.Targets[:i], t) {
			return bad("Targets", fmt.Errorf("target %q given twice", t))
		}
	}
	if o.OutDir == "" {
		return bad("OutDir", fmt.Errorf("no output directory"))
	}
	if o.Created.Before(minCreated) || o.Created.After(maxCreated) {
		return bad("Created", fmt.Errorf("creation time %s outside %d..%d", o.Created.UTC().Format(time.RFC3339), minCreated.Year(), maxCreated.Year()))
	}
	if !tagRe.MatchString(o.Version) {
		return bad("Version", fmt.Errorf("version %q is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})", o.Version))
	}
	if !revisionRe.MatchString(o.Revision) {
		return bad("Revision", fmt.Errorf("revision %q is neither a git commit (7..64 lower-case hex digits) nor \"unknown\"", o.Revision))
	}
	if u, err := url.Parse(o.Source); err != nil || u.Scheme != "https" || u.Host == "" || len(o.Source) > 512 {
		return bad("Source", fmt.Errorf("source %q is not an https URL (at most 512 bytes)", o.Source))
	}
	if err := isDir(o.RootFS, "root filesystem"); err != nil {
		return bad("RootFS", err)
	}
	for _, f := range []string{"usr/bin/ldd", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "usr/bin/espeak-ng"} {
		if err := isFile(filepath.Join(o.RootFS, f), "root filesystem's "+f); err != nil {
			return bad("RootFS", err)
		}
	}
	if err := isDir(o.BinDir, "binary directory"); err != nil {
		return bad("BinDir", err)
	}
	for _, t := range o.Targets {
		for _, b := range binariesOf(t) {
			if err := isFile(filepath.Join(o.BinDir, b), "binary "+b); err != nil {
				return bad("BinDir", err)
			}
		}
	}
	if slices.Contains(o.Targets, WorkerCPU) {
		if err := isFile(o.ORTCPU, "CPU ONNX Runtime library"); err != nil {
			return bad("ORTCPU", err)
		}
	}
	if slices.Contains(o.Targets, WorkerCUDA) {
		if err := isDir(o.ORTCUDA, "CUDA ONNX Runtime directory"); err != nil {
			return bad("ORTCUDA", err)
		}
		for _, f := range append(slices.Clone(CUDALibs), "LICENSE") {
			if err := isFile(filepath.Join(o.ORTCUDA, f), "CUDA ONNX Runtime "+f); err != nil {
				return bad("ORTCUDA", err)
			}
		}
	}
	if o.CUDALibs != "" {
		if !slices.Contains(o.Targets, WorkerCUDA) {
			return bad("CUDALibs", fmt.Errorf("CUDA libraries given but no %s target", WorkerCUDA))
		}
		if err := isDir(o.CUDALibs, "CUDA library directory"); err != nil {
			return bad("CUDALibs", err)
		}
	}
	return nil
}

func isDir(p, what string) error {
	if p == "" {
		return fmt.Errorf("no %s given", what)
	}
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, p)
	}
	return nil
}

func isFile(p, what string) error {
	if p == "" {
		return fmt.Errorf("no %s given", what)
	}
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", what, p)
	}
	return nil
}

// binariesOf are the binaries of bin/ an image carries.
func binariesOf(target string) []string {
	if target == ControlPlane {
		return []string{"controlplane", "avatarctl"}
	}
	return []string{"worker", "avatarctl"}
}
