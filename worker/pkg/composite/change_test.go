package composite

import (
	"bytes"
	"errors"
	"image"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// TestPasteChangeUnchangedIsExact: an output equal to the reference leaves
// the frame byte for byte (Paste would resample the whole box).
func TestPasteChangeUnchangedIsExact(t *testing.T) {
	c := newCompositor(t, 0)
	src, _ := avatar(t)
	face := make([]float32, c.InputLen())
	if err := c.Crop(face, src); err != nil {
		t.Fatal(err)
	}
	n := side * side
	out := append([]float32(nil), face[3*n:]...)
	dst := src.Clone()
	if err := c.PasteChange(dst, face, out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Y, src.Y) || !bytes.Equal(dst.Cb, src.Cb) || !bytes.Equal(dst.Cr, src.Cr) {
		t.Fatal("an unchanged output changed the frame")
	}
	// Paste of the same output does change it (resampled), which is why
	// PasteChange exists.
	if err := c.Paste(dst, out); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(dst.Y, src.Y) {
		t.Fatal("Paste left the frame exact: the test above proves nothing")
	}
}

// TestPasteChangeIsLocal: a change in a small square of the output changes
// the frame only around that square's place in the box, by about the
// change.
func TestPasteChangeIsLocal(t *testing.T) {
	c := newCompositor(t, 0)
	src, _ := avatar(t)
	face := make([]float32, c.InputLen())
	if err := c.Crop(face, src); err != nil {
		t.Fatal(err)
	}
	n := side * side
	out := append([]float32(nil), face[3*n:]...)
	sq := image.Rect(40, 60, 56, 70) // in the S×S crop
	for y := sq.Min.Y; y < sq.Max.Y; y++ {
		for x := sq.Min.X; x < sq.Max.X; x++ {
			for ch := range 3 {
				out[ch*n+y*side+x] = 0 // black
			}
		}
	}
	dst := src.Clone()
	if err := c.CompositeChange(dst, src, face, out); err != nil {
		t.Fatal(err)
	}
	b := c.Box()
	sx, sy := float64(b.Dx())/side, float64(b.Dy())/side
	// The square in frame pixels, grown by two crop pixels for the
	// bilinear taps.
	grown := image.Rect(
		b.Min.X+int(float64(sq.Min.X-2)*sx), b.Min.Y+int(float64(sq.Min.Y-2)*sy),
		b.Min.X+int(float64(sq.Max.X+2)*sx+1), b.Min.Y+int(float64(sq.Max.Y+2)*sy+1))
	var inside int
	for y := range fh {
		for x := range fw {
			d := int(dst.Y[y*dst.YStride+x]) - int(src.Y[y*src.YStride+x])
			if d == 0 {
				continue
			}
			if !image.Pt(x, y).In(grown) {
				t.Fatalf("pixel (%d,%d) outside %v changed by %d", x, y, grown, d)
			}
			inside++
		}
	}
	centre := image.Pt(b.Min.X+int(48*sx), b.Min.Y+int(65*sy))
	if y := dst.Y[centre.Y*dst.YStride+centre.X]; y > 20 {
		t.Errorf("the square's centre has luma %d; want black (≤ 20)", y)
	}
	if inside < 100 {
		t.Errorf("only %d pixels changed", inside)
	}
}

func TestPasteChangeShapeErrors(t *testing.T) {
	c := newCompositor(t, 0)
	src, _ := avatar(t)
	face := make([]float32, c.InputLen())
	out := make([]float32, c.OutputLen())
	small, err := frame.New(64, 64)
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"short face":  func() error { return c.PasteChange(src, face[:10], out) },
		"short out":   func() error { return c.PasteChange(src, face, out[:10]) },
		"small frame": func() error { return c.PasteChange(small, face, out) },
		"small src":   func() error { return c.CompositeChange(src, small, face, out) },
	} {
		if err := call(); !errors.Is(err, ErrShape) {
			t.Errorf("%s: %v, want ErrShape", name, err)
		}
	}
}
