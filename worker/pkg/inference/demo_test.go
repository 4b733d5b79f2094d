package inference

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"testing"
)

// TestDemoPNG writes what the default model does, for people to look at:
// the reference crop, then the output at rising loudness (silence, −2, −1.2,
// 0, 1), side by side, 3× enlarged. It runs only when asked:
//
//	AVATARFLEET_DEMO_PNG=/tmp/demo.png \
//	AVATARFLEET_DEMO_FACE=face.png AVATARFLEET_DEMO_CROP=180,61,269,174 \
//	go test -run DemoPNG ./worker/pkg/inference
//
// Without AVATARFLEET_DEMO_FACE it uses the tests' synthetic face.
func TestDemoPNG(t *testing.T) {
	dst := os.Getenv("AVATARFLEET_DEMO_PNG")
	if dst == "" {
		t.Skip("set AVATARFLEET_DEMO_PNG to write the demo image")
	}
	c := newContext(t, loadDefault(t, newRuntime(t)), ContextOptions{})
	s := c.Size()
	face := syntheticFace(s)
	if src := os.Getenv("AVATARFLEET_DEMO_FACE"); src != "" {
		var err error
		if face, err = cropFace(src, os.Getenv("AVATARFLEET_DEMO_CROP"), s); err != nil {
			t.Fatal(err)
		}
	}
	panels := [][]float32{ref(face, s)}
	for _, level := range []float32{silence, -2, medium, 0, loud} {
		panels = append(panels, runOne(t, c, voiceMel(level), face))
	}
	const zoom = 3
	img := image.NewRGBA(image.Rect(0, 0, len(panels)*s*zoom, s*zoom))
	for p, px := range panels {
		for y := range s * zoom {
			for x := range s * zoom {
				i := (y/zoom)*s + x/zoom
				img.Set(p*s*zoom+x, y, color.RGBA{to8(px[i]), to8(px[s*s+i]), to8(px[2*s*s+i]), 255})
			}
		}
	}
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", dst)
}

func to8(v float32) uint8 { return uint8(min(max(v, 0), 1)*255 + 0.5) }

// cropFace reads a PNG and resizes the box "x0,y0,x1,y1" (the whole image
// if empty) to an S×S face stack, bilinearly.
func cropFace(path, box string, s int) ([]float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r := img.Bounds()
	x0, y0, x1, y1 := r.Min.X, r.Min.Y, r.Max.X, r.Max.Y
	if box != "" {
		if _, err := fmt.Sscanf(box, "%d,%d,%d,%d", &x0, &y0, &x1, &y1); err != nil {
			return nil, fmt.Errorf("crop %q: %w", box, err)
		}
	}
	at := func(x, y int, c int) float64 {
		x, y = min(max(x, r.Min.X), r.Max.X-1), min(max(y, r.Min.Y), r.Max.Y-1)
		cr, cg, cb, _ := img.At(x, y).RGBA()
		return float64([3]uint32{cr, cg, cb}[c]) / 65535
	}
	face := make([]float32, 6*s*s)
	for y := range s {
		for x := range s {
			fx := float64(x0) + (float64(x)+0.5)*float64(x1-x0)/float64(s) - 0.5
			fy := float64(y0) + (float64(y)+0.5)*float64(y1-y0)/float64(s) - 0.5
			ix, iy := int(fx), int(fy)
			ax, ay := fx-float64(ix), fy-float64(iy)
			for c := range 3 {
				v := (at(ix, iy, c)*(1-ax)+at(ix+1, iy, c)*ax)*(1-ay) + (at(ix, iy+1, c)*(1-ax)+at(ix+1, iy+1, c)*ax)*ay
				face[(3+c)*s*s+y*s+x] = float32(v)
				if y < s/2 {
					face[c*s*s+y*s+x] = float32(v)
				}
			}
		}
	}
	return face, nil
}
