// Package frame holds I420 video frames, the pixel format the VP8 encoder
// takes, and converts them to and from RGB.
//
// # Layout
//
// An I420 frame is the standard library's 4:2:0 image.YCbCr (one Y sample per
// pixel, one Cb and one Cr sample per 2×2 block, three separate planes with
// their own strides) with its rectangle at the origin and an even width and
// height, so every chroma sample covers exactly four luma samples. The planes
// are the embedded YCbCr's Y, Cb (U) and Cr (V) slices; the Y plane is
// YStride bytes per row, both chroma planes CStride bytes per row.
//
// # Colour
//
// Samples are BT.601 limited ("studio") range: Y in 16..235 and Cb, Cr in
// 16..240 around 128. That is what libvpx assumes for its input and what
// browsers assume when they decode a WebRTC VP8 stream (VP8 signals no other
// colour space), so the colours a viewer sees are the colours of the RGB
// source. It is not the JFIF full-range mapping of image/color, so *I420
// overrides At and ColorModel with the BT.601 limited-range conversion; the
// promoted image.YCbCr helpers that build a color.YCbCr (YCbCrAt, SubImage)
// keep the stdlib's full-range meaning and are best left unused.
//
// FromImage converts an RGB(A) picture once, when an avatar is loaded; ToRGBA
// goes back, for tests and debug PNGs. Neither is on the per-frame path.
package frame

import (
	"fmt"
	"image"
	"image/color"
)

// Error is the type of this package's sentinel errors; errors.Is(err,
// frame.ErrSize) tells a size problem from the others.
type Error string

// Error implements error.
func (e Error) Error() string { return string(e) }

// ErrSize is wrapped by errors about a frame size that is zero, negative,
// odd, too large, or not the size expected.
const ErrSize Error = "frame: bad size"

// I420 is a 4:2:0 frame in BT.601 limited range; see the package comment.
// The zero value is an empty frame; use New or FromYCbCr.
type I420 struct {
	image.YCbCr
}

// MaxDim bounds the width and height New accepts (8K is 7680).
const MaxDim = 16384

// New allocates a w×h frame; w and h must be even and in 2..MaxDim. The frame
// is black (Y 16, Cb and Cr 128).
func New(w, h int) (*I420, error) {
	f, err := alloc(w, h)
	if err != nil {
		return nil, err
	}
	f.Fill(16, 128, 128)
	return f, nil
}

// alloc allocates a w×h frame with tightly packed planes of zeros.
func alloc(w, h int) (*I420, error) {
	if err := checkSize(w, h); err != nil {
		return nil, err
	}
	return &I420{YCbCr: *image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)}, nil
}

// FromYCbCr wraps img, without copying, as an I420 frame. img must be 4:2:0
// with its rectangle at the origin and an even size.
func FromYCbCr(img *image.YCbCr) (*I420, error) {
	if img.SubsampleRatio != image.YCbCrSubsampleRatio420 {
		return nil, fmt.Errorf("frame: subsample ratio %v, want 4:2:0", img.SubsampleRatio)
	}
	if img.Rect.Min != (image.Point{}) {
		return nil, fmt.Errorf("%w: rectangle %v does not start at the origin", ErrSize, img.Rect)
	}
	w, h := img.Rect.Dx(), img.Rect.Dy()
	if err := checkSize(w, h); err != nil {
		return nil, err
	}
	if img.YStride < w || img.CStride < w/2 ||
		len(img.Y) < (h-1)*img.YStride+w ||
		len(img.Cb) < (h/2-1)*img.CStride+w/2 || len(img.Cr) < (h/2-1)*img.CStride+w/2 {
		return nil, fmt.Errorf("%w: planes too short for %dx%d", ErrSize, w, h)
	}
	return &I420{YCbCr: *img}, nil
}

func checkSize(w, h int) error {
	if w < 2 || h < 2 || w > MaxDim || h > MaxDim || w%2 != 0 || h%2 != 0 {
		return fmt.Errorf("%w: %dx%d (want even, 2..%d)", ErrSize, w, h, MaxDim)
	}
	return nil
}

// Width is the frame's width in pixels.
func (f *I420) Width() int { return f.Rect.Dx() }

// Height is the frame's height in pixels.
func (f *I420) Height() int { return f.Rect.Dy() }

// Fill sets every sample of the frame: Y to y, Cb to cb, Cr to cr.
func (f *I420) Fill(y, cb, cr uint8) {
	w, h := f.Width(), f.Height()
	for r := 0; r < h; r++ {
		fill(f.Y[r*f.YStride:r*f.YStride+w], y)
	}
	for r := 0; r < h/2; r++ {
		fill(f.Cb[r*f.CStride:r*f.CStride+w/2], cb)
		fill(f.Cr[r*f.CStride:r*f.CStride+w/2], cr)
	}
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

// CopyFrom copies src's pixels into f, which must be the same size. It does
// not allocate.
func (f *I420) CopyFrom(src *I420) error {
	w, h := f.Width(), f.Height()
	if src.Width() != w || src.Height() != h {
		return fmt.Errorf("%w: copy %dx%d into %dx%d", ErrSize, src.Width(), src.Height(), w, h)
	}
	copyPlane(f.Y, f.YStride, src.Y, src.YStride, w, h)
	copyPlane(f.Cb, f.CStride, src.Cb, src.CStride, w/2, h/2)
	copyPlane(f.Cr, f.CStride, src.Cr, src.CStride, w/2, h/2)
	return nil
}

func copyPlane(dst []byte, dstStride int, src []byte, srcStride, w, h int) {
	if dstStride == srcStride {
		n := (h-1)*dstStride + w
		copy(dst[:n], src[:n])
		return
	}
	for r := 0; r < h; r++ {
		copy(dst[r*dstStride:r*dstStride+w], src[r*srcStride:r*srcStride+w])
	}
}

// Clone returns a copy of f in newly allocated, tightly packed planes.
func (f *I420) Clone() *I420 {
	c := &I420{YCbCr: *image.NewYCbCr(f.Rect, image.YCbCrSubsampleRatio420)}
	_ = c.CopyFrom(f) // same size by construction
	return c
}

// ColorModel is color.RGBAModel: At converts with BT.601 limited range.
func (f *I420) ColorModel() color.Model { return color.RGBAModel }

// At is the pixel at (x, y) as an opaque color.RGBA (BT.601 limited range),
// or transparent black outside the frame. It makes *I420 an image.Image whose
// colours are the ones a browser shows, for png.Encode and image/draw.
func (f *I420) At(x, y int) color.Color {
	if !(image.Point{X: x, Y: y}.In(f.Rect)) {
		return color.RGBA{}
	}
	r, g, b := YCbCrToRGB(f.Y[y*f.YStride+x], f.Cb[(y/2)*f.CStride+x/2], f.Cr[(y/2)*f.CStride+x/2])
	return color.RGBA{R: r, G: g, B: b, A: 255}
}
