package composite

import (
	"fmt"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// Composite copies avatar into dst (both the configured frame size) and
// pastes out into dst; see Paste. It does not allocate.
func (c *Compositor) Composite(dst, avatar *frame.I420, out []float32) error {
	if err := c.checkFrame(avatar); err != nil {
		return err
	}
	if err := c.checkFrame(dst); err != nil {
		return err
	}
	if len(out) < c.OutputLen() {
		return fmt.Errorf("%w: model output has %d values, want %d (3x%dx%d)", ErrShape, len(out), c.OutputLen(), c.s, c.s)
	}
	if err := dst.CopyFrom(avatar); err != nil {
		return fmt.Errorf("composite: copy the avatar frame: %w", err)
	}
	return c.Paste(dst, out)
}

// Paste resizes the model output out ([3,S,S] planar R, G, B in 0..1; values
// outside are clamped, NaN is 0) to the face box and blends it into dst's
// planes in place with the feather mask. Pixels outside the box are not
// touched. It does not allocate.
func (c *Compositor) Paste(dst *frame.I420, out []float32) error {
	if err := c.checkFrame(dst); err != nil {
		return err
	}
	n := c.s * c.s
	if len(out) < 3*n {
		return fmt.Errorf("%w: model output has %d values, want %d (3x%dx%d)", ErrShape, len(out), 3*n, c.s, c.s)
	}
	c.toYCbCr(out[:n], out[n:2*n], out[2*n:3*n], c.ys, c.us, c.vs)
	b := c.box
	c.blend(dst.Y, dst.YStride, b.Min.X, b.Min.Y, c.ys, c.s, c.pasteX, c.pasteY, c.alphaY)
	c.blend(dst.Cb, dst.CStride, b.Min.X/2, b.Min.Y/2, c.us, c.s/2, c.pasteCX, c.pasteCY, c.alphaC)
	c.blend(dst.Cr, dst.CStride, b.Min.X/2, b.Min.Y/2, c.vs, c.s/2, c.pasteCX, c.pasteCY, c.alphaC)
	return nil
}

func (c *Compositor) checkFrame(f *frame.I420) error {
	if f == nil || f.Width() != c.cfg.FrameWidth || f.Height() != c.cfg.FrameHeight {
		w, h := 0, 0
		if f != nil {
			w, h = f.Width(), f.Height()
		}
		return fmt.Errorf("%w: frame is %dx%d, configured for %dx%d", ErrShape, w, h, c.cfg.FrameWidth, c.cfg.FrameHeight)
	}
	return nil
}

// toYCbCr converts the S×S planar RGB r, g, b into ys (S×S) and us, vs
// (S/2×S/2, each from the mean RGB of a 2×2 block), times 16 and rounded.
func (c *Compositor) toYCbCr(r, g, b []float32, ys, us, vs []int32) {
	s := c.s
	for y := 0; y < s; y += 2 {
		r0, r1 := r[y*s:y*s+s], r[(y+1)*s:(y+1)*s+s]
		g0, g1 := g[y*s:y*s+s], g[(y+1)*s:(y+1)*s+s]
		b0, b1 := b[y*s:y*s+s], b[(y+1)*s:(y+1)*s+s]
		y0, y1 := ys[y*s:y*s+s], ys[(y+1)*s:(y+1)*s+s]
		u, v := us[(y/2)*(s/2):(y/2+1)*(s/2)], vs[(y/2)*(s/2):(y/2+1)*(s/2)]
		for x := 0; x < s; x += 2 {
			var sr, sg, sb float32
			for k := x; k < x+2; k++ {
				ra, ga, ba := clamp01(r0[k]), clamp01(g0[k]), clamp01(b0[k])
				rb, gb, bb := clamp01(r1[k]), clamp01(g1[k]), clamp01(b1[k])
				ya, _, _ := frame.RGBFToYCbCr(ra, ga, ba)
				yb, _, _ := frame.RGBFToYCbCr(rb, gb, bb)
				y0[k], y1[k] = int32(ya*16+0.5), int32(yb*16+0.5)
				sr, sg, sb = sr+ra+rb, sg+ga+gb, sb+ba+bb
			}
			_, cb, cr := frame.RGBFToYCbCr(sr*0.25, sg*0.25, sb*0.25)
			u[x/2], v[x/2] = int32(cb*16+0.5), int32(cr*16+0.5)
		}
	}
}

// rowAt is the row of the sn×sn plane src (values ·16) at vertical tap
// t, interpolated into c.row (values ·16·256).
func (c *Compositor) rowAt(src []int32, sn int, t itap) []int32 {
	row := c.row[:sn]
	top := src[int(t.i)*sn : int(t.i)*sn+sn]
	bot := src[int(t.i+1)*sn : int(t.i+1)*sn+sn]
	bot = bot[:len(top)]
	for i, v := range top {
		row[i] = v<<8 + (bot[i]-v)*t.w
	}
	return row
}

// blend resizes the sn×sn plane src (values ·16) to the box (len(tx)×len(ty)
// samples at (x0, y0) of the destination plane) and blends it in with
// weights alpha (0..256), in integer arithmetic.
func (c *Compositor) blend(dst []byte, stride, x0, y0 int, src []int32, sn int, tx, ty []itap, alpha []int32) {
	w := len(tx)
	for y, t := range ty {
		a := alpha[y*w : y*w+w]
		row := c.rowAt(src, sn, t)
		d := dst[(y0+y)*stride+x0 : (y0+y)*stride+x0+w]
		tx := tx[:len(d)]
		a = a[:len(d)]
		for x, u := range tx {
			al := a[x]
			if al == 0 {
				continue
			}
			p := row[u.i : u.i+2]
			v := (p[0]<<8 + (p[1]-p[0])*u.w) >> 12 // ·256
			old := int32(d[x])
			d[x] = uint8(old + ((v-old<<8)*al+1<<15)>>16)
		}
	}
}
