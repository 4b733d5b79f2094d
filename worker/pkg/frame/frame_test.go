package frame

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"testing"
)

func TestNewSize(t *testing.T) {
	for _, s := range [][2]int{{0, 2}, {2, 0}, {3, 2}, {2, 5}, {-2, 2}, {MaxDim + 2, 2}} {
		if _, err := New(s[0], s[1]); !errors.Is(err, ErrSize) {
			t.Errorf("New(%d, %d) error = %v, want ErrSize", s[0], s[1], err)
		}
	}
	f, err := New(6, 4)
	if err != nil {
		t.Fatal(err)
	}
	if f.Width() != 6 || f.Height() != 4 || f.YStride != 6 || f.CStride != 3 {
		t.Fatalf("New(6, 4) = %dx%d strides %d/%d", f.Width(), f.Height(), f.YStride, f.CStride)
	}
	if f.Y[0] != 16 || f.Cb[0] != 128 || f.Cr[5] != 128 {
		t.Errorf("new frame not black: Y %d Cb %d Cr %d", f.Y[0], f.Cb[0], f.Cr[5])
	}
}

func TestFromYCbCr(t *testing.T) {
	good := image.NewYCbCr(image.Rect(0, 0, 4, 4), image.YCbCrSubsampleRatio420)
	if _, err := FromYCbCr(good); err != nil {
		t.Fatal(err)
	}
	if _, err := FromYCbCr(image.NewYCbCr(image.Rect(0, 0, 4, 4), image.YCbCrSubsampleRatio444)); err == nil {
		t.Error("4:4:4 accepted")
	}
	if _, err := FromYCbCr(image.NewYCbCr(image.Rect(2, 2, 6, 6), image.YCbCrSubsampleRatio420)); !errors.Is(err, ErrSize) {
		t.Errorf("offset rectangle: %v", err)
	}
	short := *good
	short.Y = short.Y[:10]
	if _, err := FromYCbCr(&short); !errors.Is(err, ErrSize) {
		t.Errorf("short plane: %v", err)
	}
}

func TestKnownColours(t *testing.T) {
	for _, c := range []struct{ r, g, b, y, cb, cr uint8 }{
		{0, 0, 0, 16, 128, 128},
		{255, 255, 255, 235, 128, 128},
		{128, 128, 128, 126, 128, 128},
		{255, 0, 0, 81, 90, 240},
		{0, 255, 0, 145, 54, 34},
		{0, 0, 255, 41, 240, 110},
	} {
		y, cb, cr := RGBToYCbCr(c.r, c.g, c.b)
		if y != c.y || cb != c.cb || cr != c.cr {
			t.Errorf("RGB %d,%d,%d -> %d,%d,%d, want %d,%d,%d", c.r, c.g, c.b, y, cb, cr, c.y, c.cb, c.cr)
		}
		r, g, b := YCbCrToRGB(c.y, c.cb, c.cr)
		if absDiff(r, c.r) > 1 || absDiff(g, c.g) > 1 || absDiff(b, c.b) > 1 {
			t.Errorf("YCbCr %d,%d,%d -> %d,%d,%d, want ≈ %d,%d,%d", c.y, c.cb, c.cr, r, g, b, c.r, c.g, c.b)
		}
	}
}

// Every RGB colour survives the round trip within the limited range's
// quantisation (219 luma levels for 256).
func TestRoundTripAllColours(t *testing.T) {
	worst := 0
	for r := 0; r < 256; r += 3 {
		for g := 0; g < 256; g += 3 {
			for b := 0; b < 256; b += 3 {
				y, cb, cr := RGBToYCbCr(uint8(r), uint8(g), uint8(b))
				if y < 16 || y > 235 || cb < 16 || cb > 240 || cr < 16 || cr > 240 {
					t.Fatalf("RGB %d,%d,%d -> out of range %d,%d,%d", r, g, b, y, cb, cr)
				}
				r2, g2, b2 := YCbCrToRGB(y, cb, cr)
				worst = max(worst, absDiff(r2, uint8(r)), absDiff(g2, uint8(g)), absDiff(b2, uint8(b)))
			}
		}
	}
	if worst > 3 {
		t.Errorf("worst round-trip error %d, want ≤ 3", worst)
	}
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

// gradient is a smooth RGBA test picture starting at (ox, oy).
func gradient(ox, oy, w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(ox, oy, ox+w, oy+h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(ox+x, oy+y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8((x + y) * 127 / (w + h)), 255})
		}
	}
	return img
}

func TestFromImageToRGBA(t *testing.T) {
	src := gradient(3, 7, 64, 48)
	nrgba := image.NewNRGBA(src.Rect)
	copy(nrgba.Pix, src.Pix) // opaque: same bytes
	gray := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range gray.Pix {
		gray.Pix[i] = 200
	}
	for _, img := range []image.Image{src, nrgba, src.SubImage(image.Rect(5, 9, 45, 39))} {
		f, err := FromImage(img)
		if err != nil {
			t.Fatal(err)
		}
		b := img.Bounds()
		if f.Width() != b.Dx() || f.Height() != b.Dy() {
			t.Fatalf("%T: size %dx%d, want %v", img, f.Width(), f.Height(), b.Size())
		}
		back := f.ToRGBA()
		worst := 0
		for y := 0; y < b.Dy(); y++ {
			for x := 0; x < b.Dx(); x++ {
				want := src.RGBAAt(b.Min.X+x, b.Min.Y+y)
				got := back.RGBAAt(x, y)
				worst = max(worst, absDiff(got.R, want.R), absDiff(got.G, want.G), absDiff(got.B, want.B))
				if got.A != 255 {
					t.Fatalf("alpha %d", got.A)
				}
				if at := f.At(x, y); at != color.Color(got) {
					t.Fatalf("At(%d,%d) = %v, ToRGBA %v", x, y, at, got)
				}
			}
		}
		// Chroma is shared by 2×2 pixels; on this gradient neighbours
		// differ by a few levels.
		if worst > 8 {
			t.Errorf("%T: worst error %d after the round trip", img, worst)
		}
	}
	f, err := FromImage(gray) // generic path
	if err != nil {
		t.Fatal(err)
	}
	if y, cb, cr := RGBToYCbCr(200, 200, 200); f.Y[9] != y || f.Cb[3] != cb || f.Cr[3] != cr {
		t.Errorf("gray 200 -> %d,%d,%d, want %d,%d,%d", f.Y[9], f.Cb[3], f.Cr[3], y, cb, cr)
	}
	if _, err := FromImage(image.NewRGBA(image.Rect(0, 0, 5, 4))); !errors.Is(err, ErrSize) {
		t.Errorf("odd width: %v", err)
	}
	if f.At(-1, 0) != (color.RGBA{}) {
		t.Error("At outside the frame is not transparent")
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, f); err != nil { // *I420 is an image.Image
		t.Fatal(err)
	}
}

func TestTranslucentOverBlack(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 2, 2))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = 255, 255, 255, 128
	}
	f, err := FromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	if want, _, _ := RGBToYCbCr(128, 128, 128); f.Y[0] != want {
		t.Errorf("half-transparent white -> Y %d, want %d", f.Y[0], want)
	}
}

func TestCopyFromClone(t *testing.T) {
	a, err := FromImage(gradient(0, 0, 32, 16))
	if err != nil {
		t.Fatal(err)
	}
	// A destination with padded strides.
	padded := image.NewYCbCr(image.Rect(0, 0, 40, 16), image.YCbCrSubsampleRatio420)
	padded.Rect = image.Rect(0, 0, 32, 16)
	b, err := FromYCbCr(padded)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CopyFrom(a); err != nil {
		t.Fatal(err)
	}
	c := b.Clone()
	if c.YStride != 32 {
		t.Errorf("clone stride %d", c.YStride)
	}
	for y := 0; y < 16; y++ {
		for x := 0; x < 32; x++ {
			if a.At(x, y) != b.At(x, y) || a.At(x, y) != c.At(x, y) {
				t.Fatalf("pixel %d,%d differs after copy", x, y)
			}
		}
	}
	small, _ := New(2, 2)
	if err := small.CopyFrom(a); !errors.Is(err, ErrSize) {
		t.Errorf("size mismatch: %v", err)
	}
	if n := testing.AllocsPerRun(10, func() { _ = b.CopyFrom(a) }); n != 0 {
		t.Errorf("CopyFrom allocates %v times", n)
	}
}

func BenchmarkFromImage512(b *testing.B) {
	src := gradient(0, 0, 512, 512)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromImage(src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopy512(b *testing.B) {
	src, _ := FromImage(gradient(0, 0, 512, 512))
	dst, _ := New(512, 512)
	b.ReportAllocs()
	for b.Loop() {
		_ = dst.CopyFrom(src)
	}
}

func TestFloatConversions(t *testing.T) {
	for r := 0; r < 256; r += 15 {
		for g := 0; g < 256; g += 15 {
			for b := 0; b < 256; b += 15 {
				yi, cbi, cri := RGBToYCbCr(uint8(r), uint8(g), uint8(b))
				y, cb, cr := RGBFToYCbCr(float32(r)/255, float32(g)/255, float32(b)/255)
				if d := max(abs32(y-float32(yi)), abs32(cb-float32(cbi)), abs32(cr-float32(cri))); d > 0.51 {
					t.Fatalf("RGB %d,%d,%d: float %.2f,%.2f,%.2f vs integer %d,%d,%d", r, g, b, y, cb, cr, yi, cbi, cri)
				}
				r2, g2, b2 := YCbCrToRGBF(y, cb, cr)
				if d := max(abs32(r2*255-float32(r)), abs32(g2*255-float32(g)), abs32(b2*255-float32(b))); d > 0.01 {
					t.Fatalf("RGB %d,%d,%d: float round trip off by %.3f", r, g, b, d)
				}
			}
		}
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}
