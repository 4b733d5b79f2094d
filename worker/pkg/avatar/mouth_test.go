package avatar

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"testing"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/math/f64"
)

// The astronaut's mouth as read by eye from the photo (grid view): corners
// at about (204, 140) and (243, 141), upper lip from row 139, lower lip to
// row 153, the upper teeth's dark edge at rows 141..143.
var (
	eyeLeft, eyeRight = image.Pt(204, 140), image.Pt(243, 141)
	eyeBox            = image.Rect(203, 139, 245, 154)
)

func near(a, b image.Point, tol int) bool {
	d := a.Sub(b)
	return abs(d.X) <= tol && abs(d.Y) <= tol
}

func TestLocateMouthAstronaut(t *testing.T) {
	img, face := astronaut(t), DefaultFace()
	m, err := LocateMouth(img, face)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mouth %+v", m)
	if err := m.check(img.Bounds(), face); err != nil {
		t.Error(err)
	}
	if m.Box.Min.Y < face.Min.Y+face.Dy()/2 || !m.Box.In(face) {
		t.Errorf("mouth box %v is not in the lower half of the face %v", m.Box, face)
	}
	if !near(m.Left, eyeLeft, 3) || !near(m.Right, eyeRight, 3) {
		t.Errorf("corners %v %v, by eye %v %v", m.Left, m.Right, eyeLeft, eyeRight)
	}
	if !near(m.Box.Min, eyeBox.Min, 3) || !near(m.Box.Max, eyeBox.Max, 3) {
		t.Errorf("box %v, by eye %v", m.Box, eyeBox)
	}
	// The darkest row between the nose and the chin over the middle of
	// the mouth (the shadow under the upper lip) is inside the box. The
	// astronaut smiles with her upper teeth showing: the line where the
	// mouth opens is under them, above the lower lip.
	rowLuma := func(y int) float64 {
		var sum float64
		for x := 215; x < 232; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			sum += 0.299*float64(r>>8) + 0.587*float64(g>>8) + 0.114*float64(b>>8)
		}
		return sum / 17
	}
	dark, darkest := 0, math.Inf(1)
	for y := face.Min.Y + face.Dy()*2/3; y < face.Max.Y-face.Dy()/10; y++ {
		if l := rowLuma(y); l < darkest {
			dark, darkest = y, l
		}
	}
	if dark < m.Box.Min.Y || dark >= m.Box.Max.Y || m.Line < dark+4 {
		t.Errorf("darkest row %d; mouth box %v, line %d: want the line under the teeth, 4+ rows below", dark, m.Box, m.Line)
	}
	var teeth float64
	for y := dark + 2; y < m.Line; y++ {
		teeth += rowLuma(y) / float64(m.Line-dark-2)
	}
	if lip := rowLuma(m.Line + 1); teeth < lip+10 {
		t.Errorf("rows %d..%d (teeth) have luma %.0f, the lower lip's row %d %.0f: want the teeth brighter", dark+2, m.Line-1, teeth, m.Line+1, lip)
	}
	if m.Upper > dark || m.Lower < m.Line+3 {
		t.Errorf("lip rows %d, %d, %d: no lips around the opening", m.Upper, m.Line, m.Lower)
	}
}

// affine maps a source point (pixel centre) through a: the returned
// point is the destination pixel.
func affine(a f64.Aff3, p image.Point) (float64, float64) {
	x, y := float64(p.X)+0.5, float64(p.Y)+0.5
	return a[0]*x + a[1]*y + a[2] - 0.5, a[3]*x + a[4]*y + a[5] - 0.5
}

// transformed is the astronaut mapped by a onto a w×h grey picture.
func transformed(t testing.TB, a f64.Aff3, w, h int) *image.RGBA {
	src := astronaut(t)
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(dst, dst.Rect, &image.Uniform{color.RGBA{128, 128, 128, 255}}, image.Point{}, draw.Src)
	xdraw.CatmullRom.Transform(dst, a, src, src.Bounds(), xdraw.Over, nil)
	return dst
}

// A second face: the photo mirrored, scaled and shifted. The detector
// finds it and the mouth is found again where the transform puts it.
func TestLocateMouthTransformed(t *testing.T) {
	det := newDetector(t)
	want, err := LocateMouth(astronaut(t), DefaultFace())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		a      f64.Aff3
		w, h   int
		mirror bool
	}{
		{"mirrored", f64.Aff3{-1, 0, 512, 0, 1, 0}, 512, 512, true},
		{"mirrored, 0.75, shifted", f64.Aff3{-0.75, 0, 450, 0, 0.75, 37}, 480, 420, true},
		{"1.3, shifted", f64.Aff3{1.3, 0, -95, 0, 1.3, 21}, 640, 560, false},
		{"mirrored, 1.6, shifted", f64.Aff3{-1.6, 0, 700, 0, 1.6, -40}, 640, 480, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := transformed(t, c.a, c.w, c.h)
			faces, err := det.Detect(img)
			if err != nil || len(faces) != 1 {
				t.Fatalf("Detect: %v %v", faces, err)
			}
			m, err := LocateMouth(img, faces[0].Box)
			if err != nil {
				t.Fatalf("face %v: %v", faces[0].Box, err)
			}
			s := math.Abs(c.a[0])
			tol := int(math.Ceil(3 * max(1, s)))
			left, right := want.Left, want.Right
			if c.mirror {
				left, right = right, left
			}
			pt := func(p image.Point) image.Point {
				x, y := affine(c.a, p)
				return image.Pt(int(math.Round(x)), int(math.Round(y)))
			}
			if !near(m.Left, pt(left), tol) || !near(m.Right, pt(right), tol) {
				t.Errorf("corners %v %v, want %v %v ±%d", m.Left, m.Right, pt(left), pt(right), tol)
			}
			_, line := affine(c.a, image.Pt(0, want.Line))
			if math.Abs(float64(m.Line)-line) > float64(tol) {
				t.Errorf("line %d, want %.1f ±%d", m.Line, line, tol)
			}
			x0, y0 := affine(c.a, want.Box.Min)
			x1, y1 := affine(c.a, want.Box.Max.Sub(image.Pt(1, 1)))
			wb := image.Rect(int(math.Round(min(x0, x1))), int(math.Round(y0)), int(math.Round(max(x0, x1)))+1, int(math.Round(y1))+1)
			if !near(m.Box.Min, wb.Min, tol) || !near(m.Box.Max, wb.Max, tol) {
				t.Errorf("box %v, want %v ±%d", m.Box, wb, tol)
			}
			t.Logf("face %v mouth %+v", faces[0].Box, m)
		})
	}
}

// reflectTile fills a w×h picture with src mirrored back and forth (no
// seams).
func reflectTile(src image.Image, r image.Rectangle, w, h int) *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	fold := func(v, n int) int {
		v %= 2 * n
		if v >= n {
			v = 2*n - 1 - v
		}
		return v
	}
	for y := range h {
		for x := range w {
			out.Set(x, y, src.At(r.Min.X+fold(x, r.Dx()), r.Min.Y+fold(y, r.Dy())))
		}
	}
	return out
}

// Faces without a mouth give ErrNoMouth, not a wrong answer.
func TestLocateMouthNone(t *testing.T) {
	photo := astronaut(t)
	skin := color.RGBA{205, 160, 130, 255}
	noisy := image.NewRGBA(image.Rect(0, 0, 120, 140))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noisy.Pix {
		noisy.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			noisy.Pix[i] = 255
		}
	}
	uniform := image.NewRGBA(image.Rect(0, 0, 120, 140))
	draw.Draw(uniform, uniform.Rect, &image.Uniform{skin}, image.Point{}, draw.Src)
	// The photo with the lower face (below the nose) painted over with its
	// own cheek, reflected.
	painted := image.NewRGBA(photo.Bounds())
	draw.Draw(painted, painted.Rect, photo, image.Point{}, draw.Src)
	cheekSkin := reflectTile(photo, image.Rect(186, 108, 200, 124), 60, 40)
	draw.Draw(painted, image.Rect(196, 136, 256, 168), cheekSkin, image.Point{}, draw.Src)
	face := image.Rect(10, 10, 110, 130)
	for _, c := range []struct {
		name string
		img  image.Image
		face image.Rectangle
	}{
		{"forehead skin", reflectTile(photo, image.Rect(200, 78, 248, 96), 120, 140), face},
		{"cheek skin", reflectTile(photo, image.Rect(186, 108, 200, 124), 120, 140), face},
		{"uniform skin", uniform, face},
		{"noise", noisy, face},
		{"mouth painted over", painted, DefaultFace()},
		{"the suit", photo, image.Rect(60, 300, 150, 412)},
		{"tiny face", photo, image.Rect(200, 130, 220, 150)},
		{"face outside", photo, image.Rect(480, 480, 600, 600)},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := LocateMouth(c.img, c.face)
			if !errors.Is(err, ErrNoMouth) {
				t.Fatalf("LocateMouth = %+v, %v; want ErrNoMouth", m, err)
			}
			t.Log(err)
		})
	}
}

// mapRGB is src with every pixel's colour mapped by f (clamped to 0..255).
func mapRGB(src image.Image, f func(r, g, b float64) (float64, float64, float64)) *image.RGBA {
	b := src.Bounds()
	out := image.NewRGBA(b)
	c8 := func(v float64) uint8 { return uint8(max(0, min(255, math.Round(v)))) }
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := src.At(x, y).RGBA()
			R, G, B := f(float64(r>>8), float64(g>>8), float64(bb>>8))
			out.SetRGBA(x, y, color.RGBA{c8(R), c8(G), c8(B), 255})
		}
	}
	return out
}

// The same face under other exposures, white balances and coding: the
// mouth is found where it is, or (where marked) ErrNoMouth is an
// acceptable answer, but never a wrong place.
func TestLocateMouthPhotometric(t *testing.T) {
	img := astronaut(t)
	want, err := LocateMouth(img, DefaultFace())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 50}); err != nil {
		t.Fatal(err)
	}
	jpg, err := jpeg.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	gamma := func(v float64) float64 { return 255 * math.Pow(v/255, 1.8) }
	for _, c := range []struct {
		name   string
		img    image.Image
		mayNot bool // ErrNoMouth is acceptable
		none   bool // ErrNoMouth is the only right answer
	}{
		{"underexposed", mapRGB(img, func(r, g, b float64) (float64, float64, float64) { return r * 0.45, g * 0.45, b * 0.45 }), false, false},
		{"darker and redder", mapRGB(img, func(r, g, b float64) (float64, float64, float64) { return r * 0.55, g * 0.45, b * 0.4 }), false, false},
		{"gamma 1.8", mapRGB(img, func(r, g, b float64) (float64, float64, float64) { return gamma(r), gamma(g), gamma(b) }), false, false},
		{"cool light", mapRGB(img, func(r, g, b float64) (float64, float64, float64) { return r * 0.85, g, b * 1.15 }), false, false},
		{"warm light", mapRGB(img, func(r, g, b float64) (float64, float64, float64) { return r * 1.1, g, b * 0.85 }), false, false},
		{"JPEG quality 50", jpg, false, false},
		{"washed out", mapRGB(img, func(r, g, b float64) (float64, float64, float64) { return 80 + r*0.5, 80 + g*0.5, 80 + b*0.5 }), true, false},
		{"greyscale", mapRGB(img, func(r, g, b float64) (float64, float64, float64) {
			y := 0.299*r + 0.587*g + 0.114*b
			return y, y, y
		}), true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := LocateMouth(c.img, DefaultFace())
			switch {
			case err != nil && !errors.Is(err, ErrNoMouth):
				t.Fatal(err)
			case err != nil && !c.mayNot:
				t.Fatalf("no mouth: %v", err)
			case err != nil:
				t.Logf("no mouth (acceptable): %v", err)
				return
			case c.none:
				t.Fatalf("found %+v in a picture without colour", m)
			}
			if !near(m.Left, want.Left, 2) || !near(m.Right, want.Right, 2) || abs(m.Line-want.Line) > 2 ||
				!near(m.Box.Min, want.Box.Min, 2) || !near(m.Box.Max, want.Box.Max, 2) {
				t.Errorf("mouth %+v, in the photo %+v", m, want)
			}
		})
	}
}
