package images_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/deploy/images"
)

// fakeInputs makes a small root filesystem, bin/ and ONNX Runtime files
// (not runnable: for the builder's own behaviour) and returns valid options.
func fakeInputs(t *testing.T) images.Options {
	t.Helper()
	dir := t.TempDir()
	write := func(p, content string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	rootfs := filepath.Join(dir, "rootfs")
	for _, f := range []string{"usr/bin/ldd", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "usr/bin/espeak-ng"} {
		write(filepath.Join(rootfs, f), f+"\n", 0o755)
	}
	if err := os.Link(filepath.Join(rootfs, "usr/bin/ldd"), filepath.Join(rootfs, "usr/bin/ldd-hardlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/bin", filepath.Join(rootfs, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(rootfs, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	for _, b := range []string{"controlplane", "worker", "avatarctl"} {
		write(filepath.Join(bin, b), "#!/bin/sh\necho "+b+"\n", 0o755)
	}
	ortCPU := filepath.Join(dir, "ort-cpu", "libonnxruntime.so.1")
	write(ortCPU, "cpu", 0o644)
	ortCUDA := filepath.Join(dir, "ort-cuda")
	for _, f := range append(images.CUDALibs, "LICENSE") {
		write(filepath.Join(ortCUDA, f), f, 0o644)
	}
	return images.Options{
		RootFS: rootfs, BinDir: bin, ORTCPU: ortCPU, ORTCUDA: ortCUDA, OutDir: filepath.Join(dir, "out"),
		Targets: images.Targets, Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Version: "v1.2.3-4-gabcdef0", Revision: "0123456789abcdef0123456789abcdef01234567",
		Source: "https://example.com/avatarfleet",
	}
}

func TestOptionsValidate(t *testing.T) {
	good := fakeInputs(t)
	if err := good.Validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	for _, c := range []struct {
		name   string
		change func(*images.Options)
		want   string
	}{
		{"no targets", func(o *images.Options) { o.Targets = nil }, "no target"},
		{"unknown target", func(o *images.Options) { o.Targets = []string{"sfu"} }, "unknown target"},
		{"twice", func(o *images.Options) { o.Targets = []string{"worker-cpu", "worker-cpu"} }, "given twice"},
		{"no out", func(o *images.Options) { o.OutDir = "" }, "output directory"},
		{"zero time", func(o *images.Options) { o.Created = time.Time{} }, "creation time"},
		{"bad tag", func(o *images.Options) { o.Version = "v1+dirty" }, "version"},
		{"empty tag", func(o *images.Options) { o.Version = "" }, "version"},
		{"bad revision", func(o *images.Options) { o.Revision = "HEAD" }, "revision"},
		{"http source", func(o *images.Options) { o.Source = "http://example.com" }, "source"},
		{"no rootfs", func(o *images.Options) { o.RootFS = filepath.Join(o.RootFS, "nope") }, "root filesystem"},
		{"rootfs lacks ldd", func(o *images.Options) { o.RootFS = filepath.Join(o.RootFS, "usr") }, "root filesystem's usr/bin/ldd"},
		{"no worker", func(o *images.Options) { o.BinDir = o.RootFS }, "binary"},
		{"no cpu ort", func(o *images.Options) { o.ORTCPU = "" }, "CPU ONNX Runtime"},
		{"cuda ort dir lacks libs", func(o *images.Options) { o.ORTCUDA = o.BinDir }, "CUDA ONNX Runtime"},
		{"cuda libs without target", func(o *images.Options) {
			o.Targets, o.CUDALibs = []string{"controlplane"}, o.BinDir
		}, "no worker-cuda target"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.change(&o)
			err := o.Validate()
			var oe *images.OptionError
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &oe) || oe.Field == "" {
				t.Fatalf("Validate: %v, want an *OptionError with %q", err, c.want)
			}
		})
	}
}

// TestBuildIsReproducible: two builds of the same inputs give the same
// digests and byte-identical files even when the inputs' file times
// differ; a changed binary or creation time gives another digest.
func TestBuildIsReproducible(t *testing.T) {
	ctx := context.Background()
	o := fakeInputs(t)
	build := func(o images.Options, out string) map[string][]byte {
		t.Helper()
		o.OutDir = out
		res, err := images.Build(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != len(o.Targets) {
			t.Fatalf("%d results, want %d", len(res), len(o.Targets))
		}
		files := map[string][]byte{}
		for _, r := range res {
			b, err := os.ReadFile(r.Path)
			if err != nil {
				t.Fatal(err)
			}
			files[r.Target] = b
			files[r.Target+".digest"] = []byte(r.Digest.String())
		}
		left, err := filepath.Glob(filepath.Join(out, ".*"))
		if err != nil || len(left) != 0 {
			t.Fatalf("scratch files left in %s: %v", out, left)
		}
		return files
	}
	first := build(o, t.TempDir())
	later := time.Now().Add(-time.Hour)
	if err := filepath.Walk(o.RootFS, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, later, later)
	}); err != nil {
		t.Fatal(err)
	}
	second := build(o, t.TempDir())
	for k, v := range first {
		if !bytes.Equal(v, second[k]) {
			t.Errorf("%s differs between two builds of the same inputs", k)
		}
	}

	o2 := o
	o2.Created = o.Created.Add(time.Second)
	if third := build(o2, t.TempDir()); bytes.Equal(third["controlplane.digest"], first["controlplane.digest"]) {
		t.Error("another creation time gave the same digest")
	}
	if err := os.WriteFile(filepath.Join(o.BinDir, "worker"), []byte("#!/bin/sh\necho changed\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fourth := build(o, t.TempDir())
	if bytes.Equal(fourth["worker-cpu.digest"], first["worker-cpu.digest"]) {
		t.Error("a changed worker binary gave the same worker-cpu digest")
	}
	if !bytes.Equal(fourth["controlplane.digest"], first["controlplane.digest"]) {
		t.Error("a changed worker binary changed the controlplane image")
	}
}

func TestBuildStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o := fakeInputs(t)
	if _, err := images.Build(ctx, o); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Build with a cancelled context: %v, want context canceled", err)
	}
}
