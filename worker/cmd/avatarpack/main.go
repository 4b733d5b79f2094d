// Command avatarpack makes and checks avatar packs (the format is in
// worker/pkg/avatar's documentation).
//
//	avatarpack build --image photo.png --name alice --out DIR [--frames 50] [--fps 25] [--breath 0.008]
//	avatarpack check PACKDIR...
//
// build detects the one face in a PNG or JPEG photo with the bundled face
// detector (ONNX Runtime, found as worker/pkg/inference describes:
// scripts/setup.sh installs it) and writes the pack to DIR/NAME, so that
// DIR can be the worker's --avatars directory. check loads packs as the
// worker would and reports what is wrong with them.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"image"
	_ "image/jpeg" // registers JPEG with image.Decode
	_ "image/png"  // and PNG
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/facedetect"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

// Limits on the input photo (build scales it into the pack's 1920×1080).
const (
	maxImageFile = 64 << 20
	maxImageSide = 8192
	minImageSide = 64
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage:
  avatarpack build --image PHOTO --name NAME --out DIR [--frames N] [--fps N] [--breath F]
  avatarpack check PACKDIR...
`

// run is the command; it returns the exit status (2 for usage errors).
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "build":
		err = build(args[1:], stdout, stderr)
	case "check":
		err = check(args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usageError(fmt.Sprintf("unknown command %q", args[0]))
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "avatarpack: %v\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "avatarpack: %v\n", err)
		return 1
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func build(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	imagePath := fs.String("image", "", "PNG or JPEG photo with one frontal face")
	name := fs.String("name", "", "avatar name, ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
	out := fs.String("out", "", "directory to write the pack into (as DIR/NAME)")
	frames := fs.Int("frames", avatar.DefaultBuildFrames, "idle loop frames")
	fps := fs.Int("fps", avatar.DefaultBuildFPS, "frame rate")
	breath := fs.Float64("breath", avatar.DefaultBreath, "idle breathing scale, 0..0.01 (negative: still)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
	}
	switch {
	case fs.NArg() > 0:
		return usageError(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	case *imagePath == "" || *name == "" || *out == "":
		return usageError("build needs --image, --name and --out")
	case !fleetstore.ValidName(*name):
		return usageError(fmt.Sprintf("name %q must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$", *name))
	}
	img, err := readImage(*imagePath)
	if err != nil {
		return err
	}
	opts := avatar.BuildOptions{Name: *name, Frames: *frames, FPS: *fps, Breath: *breath}
	if *breath == 0 {
		opts.Breath = -1 // an explicit 0 means no motion, not the default
	}
	dir := filepath.Join(*out, *name)
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("%s already exists", dir)
	}
	start := time.Now()
	rt, err := inference.NewRuntime(inference.RuntimeOptions{})
	if err != nil {
		return err
	}
	defer rt.Close()
	det, err := facedetect.New(rt, facedetect.Options{})
	if err != nil {
		return err
	}
	defer det.Close()
	p, err := avatar.Build(img, det, opts)
	if err != nil {
		return err
	}
	if err := p.Save(dir); err != nil {
		return err
	}
	b := p.Box(0)
	mouth := "no mouth found (crop from the face box alone)"
	if m, ok := p.Mouth(0); ok {
		mouth = fmt.Sprintf("mouth [%d %d %d %d]", m.Box.Min.X, m.Box.Min.Y, m.Box.Dx(), m.Box.Dy())
	}
	fmt.Fprintf(stdout, "wrote %s: %d frames of %dx%d at %d fps, face box [%d %d %d %d], %s (%v)\n",
		dir, p.Len(), p.Width(), p.Height(), p.FPS(), b.Min.X, b.Min.Y, b.Dx(), b.Dy(), mouth, time.Since(start).Round(time.Millisecond))
	return nil
}

// readImage reads a PNG or JPEG photo within the size limits, checking
// the header before decoding the pixels.
func readImage(path string) (image.Image, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxImageFile {
		return nil, fmt.Errorf("%s: want a regular file of at most %d MiB", path, maxImageFile>>20)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: not a PNG or JPEG picture: %w", path, err)
	}
	if format != "png" && format != "jpeg" {
		return nil, fmt.Errorf("%s: a %s picture; want PNG or JPEG", path, format)
	}
	if cfg.Width < minImageSide || cfg.Height < minImageSide || cfg.Width > maxImageSide || cfg.Height > maxImageSide {
		return nil, fmt.Errorf("%s: %dx%d; want %d..%d pixels a side", path, cfg.Width, cfg.Height, minImageSide, maxImageSide)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: decoding %s: %w", path, format, err)
	}
	return img, nil
}

func check(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError("check needs pack directories")
	}
	var errs []error
	for _, dir := range args {
		p, err := avatar.Load(dir, avatar.LoadOptions{})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mouth := "no mouth"
		if m, ok := p.Mouth(0); ok {
			mouth = fmt.Sprintf("mouth [%d %d %d %d]", m.Box.Min.X, m.Box.Min.Y, m.Box.Dx(), m.Box.Dy())
		}
		fmt.Fprintf(stdout, "%s: ok, %q, %d frames of %dx%d at %d fps, %s\n", dir, p.Name(), p.Len(), p.Width(), p.Height(), p.FPS(), mouth)
	}
	return errors.Join(errs...)
}
