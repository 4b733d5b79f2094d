package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/avatarfleet/avatarfleet/deploy/images"
)

// Config is mkimage's command line.
type Config struct {
	RootFS       string
	Bin          string
	ORTCPU       string
	ORTCUDA      string
	CUDALibs     string
	Out          string
	Targets      string
	CreatedEpoch int64
	Version      string
	Revision     string
	Source       string
}

// ParseConfig reads the flags; -help returns flag.ErrHelp.
func ParseConfig(args []string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.RootFS, "rootfs", "", "root filesystem directory (what scripts/rootfs.sh prints)")
	fs.StringVar(&c.Bin, "bin", "bin", "directory with controlplane, worker and avatarctl (make build)")
	fs.StringVar(&c.ORTCPU, "onnxruntime-cpu", "", "CPU ONNX Runtime library, libonnxruntime.so.1 (for worker-cpu)")
	fs.StringVar(&c.ORTCUDA, "onnxruntime-cuda", "", "directory of the CUDA ONNX Runtime libraries (what scripts/ort-cuda.sh prints; for worker-cuda)")
	fs.StringVar(&c.CUDALibs, "cuda-libs", "", "optional directory of CUDA runtime, cuBLAS, cuRAND and cuDNN libraries to bake into worker-cuda at "+images.CUDALibDir)
	fs.StringVar(&c.Out, "out", "out/images", "output directory (<target>.tar each)")
	fs.StringVar(&c.Targets, "targets", strings.Join(images.Targets, ","), "comma-separated images to build")
	fs.Int64Var(&c.CreatedEpoch, "created-epoch", -1, "pinned creation time, Unix seconds (SOURCE_DATE_EPOCH)")
	fs.StringVar(&c.Version, "version", "", "image version (tag), e.g. git describe")
	fs.StringVar(&c.Revision, "revision", "", "git commit the binaries were built from")
	fs.StringVar(&c.Source, "source", "https://github.com/avatarfleet/avatarfleet", "source repository URL")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks the flags (each error names its flag).
func (c Config) Validate() error {
	_, err := c.Options()
	return err
}

// Options turns the flags into the builder's options, validated.
func (c Config) Options() (images.Options, error) {
	if c.CreatedEpoch < 0 {
		return images.Options{}, fmt.Errorf("--created-epoch: missing or negative (%d)", c.CreatedEpoch)
	}
	o := images.Options{
		RootFS: c.RootFS, BinDir: c.Bin, ORTCPU: c.ORTCPU, ORTCUDA: c.ORTCUDA, CUDALibs: c.CUDALibs,
		OutDir: c.Out, Created: time.Unix(c.CreatedEpoch, 0).UTC(),
		Version: c.Version, Revision: c.Revision, Source: c.Source,
	}
	for _, t := range strings.Split(c.Targets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.Targets = append(o.Targets, t)
		}
	}
	if err := o.Validate(); err != nil {
		return images.Options{}, fmt.Errorf("%s: %w", flagOf(err), err)
	}
	return o, nil
}

// flags maps an images.Options field to its flag.
var flags = map[string]string{
	"Targets": "--targets", "OutDir": "--out", "Created": "--created-epoch", "Version": "--version",
	"Revision": "--revision", "Source": "--source", "RootFS": "--rootfs", "BinDir": "--bin",
	"ORTCPU": "--onnxruntime-cpu", "ORTCUDA": "--onnxruntime-cuda", "CUDALibs": "--cuda-libs",
}

// flagOf names the flag behind an options error (the library names fields).
func flagOf(err error) string {
	var oe *images.OptionError
	if errors.As(err, &oe) && flags[oe.Field] != "" {
		return flags[oe.Field]
	}
	return "mkimage"
}
