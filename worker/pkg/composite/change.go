package composite

import (
	"fmt"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// CompositeChange copies avatar into dst and adds the model's change to
// its reference; see PasteChange. It does not allocate.
func (c *Compositor) CompositeChange(dst, avatar *frame.I420, face, out []float32) error {
	if err := c.checkFrame(avatar); err != nil {
		return err
	}
	if err := dst.CopyFrom(avatar); err != nil {
		return fmt.Errorf("composite: copy the avatar frame: %w", err)
	}
	return c.PasteChange(dst, face, out)
}

// PasteChange blends into dst, with the feather mask, only what the model
// changed: the output out ([3,S,S]) minus the reference it was given
// (channels 3..5 of the face input item face, as Crop wrote it), resized to
// the box. Where the model returned its reference unchanged the frame is
// left as it was, pixel for pixel, at its full resolution; a model that
// only moves the mouth (the generated default) leaves the rest of the face
// sharp. A model that regenerates the whole crop (Wav2Lip) wants Paste: the
// frame's own detail would show through its output. It does not allocate.
func (c *Compositor) PasteChange(dst *frame.I420, face, out []float32) error {
	if err := c.checkFrame(dst); err != nil {
		return err
	}
	n := c.s * c.s
	if err := c.checkInput(face); err != nil {
		return err
	}
	if len(out) < 3*n {
		return fmt.Errorf("%w: model output has %d values, want %d (3x%dx%d)", ErrShape, len(out), 3*n, c.s, c.s)
	}
	c.changeYCbCr(face[3*n:6*n], out[:3*n])
	b := c.box
	c.blendChange(dst.Y, dst.YStride, b.Min.X, b.Min.Y, c.ys, c.s, c.pasteX, c.pasteY, c.alphaY)
	c.blendChange(dst.Cb, dst.CStride, b.Min.X/2, b.Min.Y/2, c.us, c.s/2, c.pasteCX, c.pasteCY, c.alphaC)
	c.blendChange(dst.Cr, dst.CStride, b.Min.X/2, b.Min.Y/2, c.vs, c.s/2, c.pasteCX, c.pasteCY, c.alphaC)
	return nil
}

// changeYCbCr writes out − ref as Y (c.ys) and Cb, Cr (c.us, c.vs), ·16,
// as toYCbCr would for each; the 2×2 blocks where out equals ref (most of
// the crop, for a model that moves the mouth) are zero without converting.
func (c *Compositor) changeYCbCr(ref, out []float32) {
	s := c.s
	n := s * s
	for y := 0; y < s; y += 2 {
		for x := 0; x < s; x += 2 {
			same := true
		block:
			for ch := range 3 {
				for _, k := range [4]int{y*s + x, y*s + x + 1, (y+1)*s + x, (y+1)*s + x + 1} {
					if out[ch*n+k] != ref[ch*n+k] {
						same = false
						break block
					}
				}
			}
			if same {
				c.ys[y*s+x], c.ys[y*s+x+1], c.ys[(y+1)*s+x], c.ys[(y+1)*s+x+1] = 0, 0, 0, 0
				c.us[(y/2)*(s/2)+x/2], c.vs[(y/2)*(s/2)+x/2] = 0, 0
				continue
			}
			var ry, oy [4]int32
			rcb, rcr := block(ref, s, x, y, &ry)
			ocb, ocr := block(out, s, x, y, &oy)
			c.ys[y*s+x], c.ys[y*s+x+1] = oy[0]-ry[0], oy[1]-ry[1]
			c.ys[(y+1)*s+x], c.ys[(y+1)*s+x+1] = oy[2]-ry[2], oy[3]-ry[3]
			c.us[(y/2)*(s/2)+x/2], c.vs[(y/2)*(s/2)+x/2] = ocb-rcb, ocr-rcr
		}
	}
}

// block converts the 2×2 block at (x, y) of the planar S×S RGB p as
// toYCbCr does: the four lumas into ys, and the block's Cb and Cr.
func block(p []float32, s, x, y int, ys *[4]int32) (cb, cr int32) {
	n := s * s
	var sr, sg, sb float32
	for i, k := range [4]int{y*s + x, y*s + x + 1, (y+1)*s + x, (y+1)*s + x + 1} {
		r, g, b := clamp01(p[k]), clamp01(p[n+k]), clamp01(p[2*n+k])
		l, _, _ := frame.RGBFToYCbCr(r, g, b)
		ys[i] = int32(l*16 + 0.5)
		sr, sg, sb = sr+r, sg+g, sb+b
	}
	_, u, v := frame.RGBFToYCbCr(sr*0.25, sg*0.25, sb*0.25)
	return int32(u*16 + 0.5), int32(v*16 + 0.5)
}

// blendChange resizes the sn×sn plane of changes src (values ·16) to the
// box like blend and adds it, times the weights alpha (0..256), to the
// destination, clamped to 0..255. A zero change leaves a sample as it was.
func (c *Compositor) blendChange(dst []byte, stride, x0, y0 int, src []int32, sn int, tx, ty []itap, alpha []int32) {
	w := len(tx)
	for y, t := range ty {
		a := alpha[y*w : y*w+w]
		row := c.rowAt(src, sn, t)
		d := dst[(y0+y)*stride+x0 : (y0+y)*stride+x0+w]
		tx := tx[:len(d)]
		a = a[:len(d)]
		for x, u := range tx {
			p := row[u.i : u.i+2]
			v := p[0]<<8 + (p[1]-p[0])*u.w // ·16·256·256
			if v == 0 {
				continue
			}
			// v·alpha/2^28 rounded half away from zero: ·16·256·256·256.
			ch := int64(v) * int64(a[x])
			var delta int32
			if ch >= 0 {
				delta = int32((ch + 1<<27) >> 28)
			} else {
				delta = -int32((-ch + 1<<27) >> 28)
			}
			d[x] = uint8(min(max(int32(d[x])+delta, 0), 255))
		}
	}
}
