package composite

import (
	"fmt"
	"image"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// Crop cuts the face box out of src, resizes it to S×S RGB in 0..1 and
// writes one face input item into dst[:6·S·S]: the masked crop (lower half
// zero) in channels 0..2 and the unmasked reference in channels 3..5. It does
// not allocate.
func (c *Compositor) Crop(dst []float32, src *frame.I420) error {
	if err := c.checkFrame(src); err != nil {
		return err
	}
	if err := c.checkInput(dst); err != nil {
		return err
	}
	s := c.s
	n := s * s
	ref := dst[3*n : 6*n]
	rr, rg, rb := ref[:n], ref[n:2*n], ref[2*n:]
	for y, ty := range c.cropY {
		tc := c.cropCY[y]
		y0 := src.Y[int(ty.i)*src.YStride:]
		y1 := src.Y[int(ty.i+1)*src.YStride:]
		cb0, cb1 := src.Cb[int(tc.i)*src.CStride:], src.Cb[int(tc.i+1)*src.CStride:]
		cr0, cr1 := src.Cr[int(tc.i)*src.CStride:], src.Cr[int(tc.i+1)*src.CStride:]
		for x, tx := range c.cropX {
			cx := c.cropCX[x]
			yv := bilerp(y0, y1, tx, ty.w)
			cb := bilerp(cb0, cb1, cx, tc.w)
			cr := bilerp(cr0, cr1, cx, tc.w)
			r, g, b := frame.YCbCrToRGBF(yv, cb, cr)
			o := y*s + x
			rr[o], rg[o], rb[o] = clamp01(r), clamp01(g), clamp01(b)
		}
	}
	c.mask(dst)
	return nil
}

// bilerp samples two rows at tap t horizontally and weight wy vertically.
func bilerp(r0, r1 []byte, t tap, wy float32) float32 {
	a, b := r0[t.i:t.i+2], r1[t.i:t.i+2]
	top := float32(a[0]) + t.w*(float32(a[1])-float32(a[0]))
	bot := float32(b[0]) + t.w*(float32(b[1])-float32(b[0]))
	return top + wy*(bot-top)
}

// CropRGBA is Crop from an RGB(A) frame of the configured size (alpha is
// ignored; src.Rect may start anywhere).
func (c *Compositor) CropRGBA(dst []float32, src *image.RGBA) error {
	if src == nil || src.Rect.Dx() != c.cfg.FrameWidth || src.Rect.Dy() != c.cfg.FrameHeight {
		var r image.Rectangle
		if src != nil {
			r = src.Rect
		}
		return fmt.Errorf("%w: image %v, configured for %dx%d", ErrShape, r, c.cfg.FrameWidth, c.cfg.FrameHeight)
	}
	if err := c.checkInput(dst); err != nil {
		return err
	}
	s := c.s
	n := s * s
	ref := dst[3*n : 6*n]
	pix := src.Pix[src.PixOffset(src.Rect.Min.X, src.Rect.Min.Y):]
	for y, ty := range c.cropY {
		p0 := pix[int(ty.i)*src.Stride:]
		p1 := pix[int(ty.i+1)*src.Stride:]
		for x, tx := range c.cropX {
			i := 4 * int(tx.i)
			a, b := p0[i:i+8], p1[i:i+8]
			for ch := 0; ch < 3; ch++ {
				top := float32(a[ch]) + tx.w*(float32(a[4+ch])-float32(a[ch]))
				bot := float32(b[ch]) + tx.w*(float32(b[4+ch])-float32(b[ch]))
				ref[ch*n+y*s+x] = clamp01((top + ty.w*(bot-top)) * (1.0 / 255))
			}
		}
	}
	c.mask(dst)
	return nil
}

func (c *Compositor) checkInput(dst []float32) error {
	if len(dst) < c.InputLen() {
		return fmt.Errorf("%w: face input has %d values, want %d (6x%dx%d)", ErrShape, len(dst), c.InputLen(), c.s, c.s)
	}
	return nil
}

// mask fills channels 0..2 of dst from the reference in 3..5: the upper half
// copied, the lower half (rows S/2..S−1) zero.
func (c *Compositor) mask(dst []float32) {
	n := c.s * c.s
	h := (c.s / 2) * c.s
	for ch := 0; ch < 3; ch++ {
		m := dst[ch*n : (ch+1)*n]
		copy(m[:h], dst[(3+ch)*n:(3+ch)*n+h])
		clear(m[h:])
	}
}
