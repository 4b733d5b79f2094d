//go:build dynamic

// Command mouthstills renders what the generated default lip-sync model
// does to an avatar's face, as PNG stills for the README and for people
// tuning the model: the avatar's frame 0 with the mouth closed (silence) and
// opened at a few loudness levels, each as the whole frame and as the lower
// face enlarged.
//
//	go run -tags dynamic ./worker/cmd/mouthstills -out docs/stills
package main

import (
	"errors"
	"flag"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"

	xdraw "golang.org/x/image/draw"

	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/composite"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

func main() {
	out := flag.String("out", "docs/stills", "directory the PNGs are written to")
	pack := flag.String("avatar", "", "avatar pack directory (default: the built-in avatar)")
	model := flag.String("model", "", "lip-sync model file (default: the generated default model)")
	flag.Parse()
	if err := run(*out, *pack, *model); err != nil {
		slog.Error("mouthstills", "err", err)
		os.Exit(1)
	}
}

// levels are the mel values of the voice bands (silence is −4) the stills
// show, with their file-name suffixes.
var levels = []struct {
	name string
	mel  float32
}{{"silence", -4}, {"quiet", -2}, {"medium", -1}, {"loud", 0}}

func run(dir, packDir, modelPath string) error {
	var p *avatar.Pack
	var err error
	if packDir == "" {
		p, err = avatar.Default()
	} else {
		p, err = avatar.Load(packDir, avatar.LoadOptions{})
	}
	if err != nil {
		return err
	}
	var data []byte
	if modelPath == "" {
		data, err = onnxgen.DefaultModel()
	} else {
		data, err = os.ReadFile(modelPath)
	}
	if err != nil {
		return err
	}
	rt, err := inference.NewRuntime(inference.RuntimeOptions{})
	if err != nil {
		return err
	}
	defer func() { _ = rt.Close() }()
	m, err := rt.LoadModelData("model", data)
	if err != nil {
		return err
	}
	c, err := m.NewContext(inference.ContextOptions{Batch: 1})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	img := p.Image(0)
	comp, err := composite.New(composite.Config{FrameWidth: p.Width(), FrameHeight: p.Height(), Box: p.Box(0), Size: c.Size()})
	if err != nil {
		return err
	}
	face := make([]float32, c.FaceLen())
	if err := comp.Crop(face, img); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	box := p.Box(0)
	lower := image.Rect(box.Min.X, box.Min.Y+box.Dy()/3, box.Max.X, box.Max.Y)
	var strip []image.Image
	for _, lv := range levels {
		mel := make([]float32, c.MelLen())
		for b := range onnxgen.MelBands {
			for t := range onnxgen.MelFrames {
				v := float32(-4)
				if b >= 2 && b <= 60 {
					v = lv.mel
				}
				mel[b*onnxgen.MelFrames+t] = v
			}
		}
		outF := make([]float32, c.OutLen())
		if err := c.Run(mel, face, outF); err != nil {
			return err
		}
		dst, err := frame.New(p.Width(), p.Height())
		if err != nil {
			return err
		}
		if err := comp.CompositeChange(dst, img, face, outF); err != nil {
			return err
		}
		rgba := dst.ToRGBA()
		zoom := enlarge(rgba, lower, 3)
		strip = append(strip, zoom)
		if err := writePNG(filepath.Join(dir, "mouth-"+lv.name+".png"), zoom); err != nil {
			return err
		}
	}
	return writePNG(filepath.Join(dir, "mouth-strip.png"), hstack(strip))
}

// enlarge is r of img scaled k times.
func enlarge(img *image.RGBA, r image.Rectangle, k int) *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, r.Dx()*k, r.Dy()*k))
	xdraw.CatmullRom.Scale(out, out.Rect, img, r, xdraw.Src, nil)
	return out
}

// hstack puts imgs side by side with a 4-pixel gap.
func hstack(imgs []image.Image) *image.RGBA {
	w, h := 0, 0
	for _, im := range imgs {
		w += im.Bounds().Dx() + 4
		h = max(h, im.Bounds().Dy())
	}
	out := image.NewRGBA(image.Rect(0, 0, w-4, h))
	x := 0
	for _, im := range imgs {
		draw.Draw(out, im.Bounds().Add(image.Pt(x, 0)), im, im.Bounds().Min, draw.Src)
		x += im.Bounds().Dx() + 4
	}
	return out
}

func writePNG(path string, img image.Image) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	return png.Encode(f, img)
}
