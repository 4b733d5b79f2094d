package facedetect

import (
	"bytes"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"github.com/avatarfleet/avatarfleet/worker/assets"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m))
}

func newDetector(t testing.TB) *Detector {
	t.Helper()
	rt, err := inference.NewRuntime(inference.RuntimeOptions{})
	if err != nil {
		t.Fatalf("NewRuntime: %v (run scripts/setup.sh first)", err)
	}
	d, err := New(rt, Options{})
	if err != nil {
		rt.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		if err := rt.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

func astronaut(t testing.TB) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(assets.AstronautPNG))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// The data README's figure: x1=180, y1=61, x2=269, y2=174.
var wantAstronaut = image.Rect(180, 61, 269, 174)

func near(a, b image.Rectangle, tol int) bool {
	d := func(x, y int) bool { return x-y <= tol && y-x <= tol }
	return d(a.Min.X, b.Min.X) && d(a.Min.Y, b.Min.Y) && d(a.Max.X, b.Max.X) && d(a.Max.Y, b.Max.Y)
}

func TestAstronaut(t *testing.T) {
	d := newDetector(t)
	start := time.Now()
	faces, err := d.Detect(astronaut(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("detect 512x512: %v, faces %+v", time.Since(start), faces)
	if len(faces) != 1 {
		t.Fatalf("found %d faces, want 1: %+v", len(faces), faces)
	}
	if !near(faces[0].Box, wantAstronaut, 8) || faces[0].Score < 0.9 {
		t.Errorf("face %+v, want about %v with a high score", faces[0], wantAstronaut)
	}
}

// A picture whose bounds do not start at the origin, in a wider frame:
// the box must come back in the picture's own coordinates.
func TestOffsetWidePicture(t *testing.T) {
	d := newDetector(t)
	src := astronaut(t)
	wide := image.NewRGBA(image.Rect(-100, 50, 924, 562))
	draw.Draw(wide, wide.Rect, image.NewUniform(color.RGBA{90, 90, 90, 255}), image.Point{}, draw.Src)
	draw.Draw(wide, image.Rect(200, 50, 712, 562), src, image.Point{}, draw.Src)
	faces, err := d.Detect(wide)
	if err != nil {
		t.Fatal(err)
	}
	want := wantAstronaut.Add(image.Pt(200, 50))
	if len(faces) != 1 || !near(faces[0].Box, want, 10) {
		t.Fatalf("faces %+v, want one near %v", faces, want)
	}
}

func TestNoFace(t *testing.T) {
	d := newDetector(t)
	gray := image.NewGray(image.Rect(0, 0, 640, 480))
	for i := range gray.Pix {
		gray.Pix[i] = 128
	}
	faces, err := d.Detect(gray)
	if err != nil {
		t.Fatal(err)
	}
	if len(faces) != 0 {
		t.Errorf("flat gray: %d faces %+v, want none", len(faces), faces)
	}
	if _, err := d.Detect(image.NewRGBA(image.Rect(0, 0, 0, 0))); err == nil {
		t.Error("empty picture: no error")
	}
}

func TestOptions(t *testing.T) {
	rt, err := inference.NewRuntime(inference.RuntimeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if _, err := New(rt, Options{Threshold: 1.5}); err == nil {
		t.Error("threshold 1.5 accepted")
	}
	if _, err := New(rt, Options{Model: []byte("not onnx")}); err == nil {
		t.Error("garbage model accepted")
	}
}

func TestOverlap(t *testing.T) {
	if got := overlap(0, 0, 10, 10, 5, 0, 15, 10); got < 0.333 || got > 0.334 {
		t.Errorf("IoU %v, want 1/3", got)
	}
	if got := overlap(0, 0, 1, 1, 2, 2, 3, 3); got != 0 {
		t.Errorf("disjoint IoU %v", got)
	}
}

func BenchmarkDetect(b *testing.B) {
	d := newDetector(b)
	img := astronaut(b)
	for b.Loop() {
		if _, err := d.Detect(img); err != nil {
			b.Fatal(err)
		}
	}
}
