package images

import (
	"archive/tar"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Result is one image written.
type Result struct {
	Target string
	// Path is the OCI layout tar file.
	Path string
	// Digest is the image manifest's digest (what a registry reports).
	Digest v1.Hash
}

// Build writes one OCI layout tar file per target into o.OutDir.
func Build(ctx context.Context, o Options) ([]Result, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	work, err := os.MkdirTemp(o.OutDir, ".work-")
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	defer os.RemoveAll(work)

	start := time.Now()
	base := newLayerSpec()
	if err := base.addTree(o.RootFS, "/"); err != nil {
		return nil, fmt.Errorf("images: root filesystem: %w", err)
	}
	baseLayer, err := o.layer(ctx, work, "rootfs", base)
	if err != nil {
		return nil, fmt.Errorf("images: root filesystem: %w", err)
	}
	log.Info("root filesystem layer", "entries", len(base.entries), "took", time.Since(start).Round(time.Millisecond))

	var out []Result
	for _, t := range o.Targets {
		start := time.Now()
		r, err := o.buildOne(ctx, work, t, baseLayer)
		if err != nil {
			return out, fmt.Errorf("images: %s: %w", t, err)
		}
		log.Info("image", "target", t, "path", r.Path, "digest", r.Digest.String(), "took", time.Since(start).Round(time.Millisecond))
		out = append(out, r)
	}
	return out, nil
}

// layer writes spec as a tar file under work and returns it as an OCI
// layer (gzip, its compressed form kept once computed).
func (o Options) layer(ctx context.Context, work, name string, spec *layerSpec) (v1.Layer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := filepath.Join(work, name+".tar")
	f, err := os.Create(p)
	if err != nil {
		return nil, err
	}
	if err := spec.write(f, o.Created); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromFile(p, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	if _, err := l.Digest(); err != nil { // compress now, once
		return nil, err
	}
	return l, nil
}

// appLayer is the target's own files.
func (o Options) appLayer(target string) (*layerSpec, error) {
	l := newLayerSpec()
	for _, b := range binariesOf(target) {
		if err := l.addFile(filepath.Join(BinDir, b), filepath.Join(o.BinDir, b), 0o755); err != nil {
			return nil, err
		}
	}
	l.addDir(DataDir, 0o700, UID, UID)
	switch target {
	case WorkerCPU:
		if err := l.addFile(ORTDir+"/libonnxruntime.so.1", o.ORTCPU, 0o644); err != nil {
			return nil, err
		}
		l.addSymlink(ORTDir+"/libonnxruntime.so", "libonnxruntime.so.1")
	case WorkerCUDA:
		// The core library under its soname; the providers beside it, where
		// ONNX Runtime looks for them.
		if err := l.addFile(ORTDir+"/libonnxruntime.so.1", filepath.Join(o.ORTCUDA, "libonnxruntime.so"), 0o644); err != nil {
			return nil, err
		}
		l.addSymlink(ORTDir+"/libonnxruntime.so", "libonnxruntime.so.1")
		for _, f := range CUDALibs[1:] {
			if err := l.addFile(ORTDir+"/"+f, filepath.Join(o.ORTCUDA, f), 0o644); err != nil {
				return nil, err
			}
		}
		if err := l.addFile("/usr/share/doc/onnxruntime/LICENSE", filepath.Join(o.ORTCUDA, "LICENSE"), 0o644); err != nil {
			return nil, err
		}
		// The CUDA provider opens cuDNN as "libcudnn.so"; cuDNN 9
		// installs name it libcudnn.so.9.
		l.addSymlink(ORTDir+"/libcudnn.so", CUDALibDir+"/libcudnn.so.9")
		l.addDir(CUDALibDir, 0o755, 0, 0)
		if o.CUDALibs != "" {
			if err := l.addTree(o.CUDALibs, CUDALibDir); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

func (o Options) buildOne(ctx context.Context, work, target string, base v1.Layer) (Result, error) {
	spec, err := o.appLayer(target)
	if err != nil {
		return Result{}, err
	}
	app, err := o.layer(ctx, work, target, spec)
	if err != nil {
		return Result{}, err
	}
	created := v1.Time{Time: o.Created.UTC()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer,
			History: v1.History{Created: created, CreatedBy: "scripts/rootfs.sh (debootstrap --variant=minbase)"}},
		mutate.Addendum{Layer: app, MediaType: types.OCILayer,
			History: v1.History{Created: created, CreatedBy: "deploy/images: " + target}})
	if err != nil {
		return Result{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Result{}, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = "amd64", "linux", created
	cf.Config = o.config(target)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return Result{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return Result{}, err
	}
	final := filepath.Join(o.OutDir, target+".tar")
	if err := o.writeArchive(ctx, work, target, img, final); err != nil {
		return Result{}, err
	}
	return Result{Target: target, Path: final, Digest: digest}, nil
}

// config is the image's run configuration.
func (o Options) config(target string) v1.Config {
	labels := map[string]string{
		"org.opencontainers.image.title":       "avatarfleet-" + target,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.description": descriptions[target],
	}
	env := []string{
		"PATH=" + BinDir + ":/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + DataDir,
		"TMPDIR=/tmp",
		"AVATARFLEET_DATA_DIR=" + DataDir,
	}
	c := v1.Config{
		User:       strconv.Itoa(UID) + ":" + strconv.Itoa(UID),
		WorkingDir: DataDir,
		Labels:     labels,
		Volumes:    map[string]struct{}{DataDir: {}, "/tmp": {}},
		StopSignal: "SIGTERM",
	}
	switch target {
	case ControlPlane:
		c.Entrypoint = []string{BinDir + "/controlplane"}
		c.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	default:
		c.Entrypoint = []string{BinDir + "/worker"}
		c.ExposedPorts = map[string]struct{}{
			strconv.Itoa(MediaPort) + "/udp": {}, "9090/tcp": {}, "9091/tcp": {},
		}
		env = append(env, "AVATARFLEET_ONNXRUNTIME_LIB="+ORTDir+"/libonnxruntime.so.1")
	}
	if target == WorkerCUDA {
		env = append(env,
			"LD_LIBRARY_PATH="+ORTDir+":"+CUDALibDir,
			"NVIDIA_VISIBLE_DEVICES=all",
			"NVIDIA_DRIVER_CAPABILITIES=compute,utility",
			"NVIDIA_REQUIRE_CUDA=cuda>=13.0",
		)
	}
	c.Env = env
	return c
}

var descriptions = map[string]string{
	ControlPlane: "AvatarFleet control plane (REST API, placement, embedded etcd and NATS by default) and avatarctl",
	WorkerCPU:    "AvatarFleet worker, ONNX Runtime 1.24.1 on the CPU",
	WorkerCUDA:   "AvatarFleet worker, ONNX Runtime 1.29.0 with its CUDA 13 provider (CUDA runtime, cuBLAS, cuDNN from the node)",
}

// writeArchive writes img as an OCI layout under work, then that layout as
// one tar file at final (written beside it and renamed into place).
func (o Options) writeArchive(ctx context.Context, work, target string, img v1.Image, final string) error {
	dir := filepath.Join(work, target+".layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.Version,
	})); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	spec := newLayerSpec()
	if err := spec.addTree(dir, "/"); err != nil {
		return err
	}
	for _, e := range spec.entries { // a layout's files are plain data: no owner, fixed modes
		e.hdr.Uid, e.hdr.Gid = 0, 0
		if e.hdr.Typeflag == tar.TypeDir {
			e.hdr.Mode = 0o755
		} else {
			e.hdr.Mode = 0o644
		}
	}
	tmp := final + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := spec.write(f, o.Created); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
