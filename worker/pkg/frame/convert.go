package frame

import (
	"fmt"
	"image"
)

// BT.601 limited range in 16.16 fixed point. Forward:
//
//	Y  = 16  + 219/255·( 0.299·R + 0.587·G + 0.114·B)
//	Cb = 128 + 224/255·(−0.168736·R − 0.331264·G + 0.5·B)
//	Cr = 128 + 224/255·( 0.5·R − 0.418688·G − 0.081312·B)
//
// and the exact inverse, with R, G, B in 0..255.
const (
	fix     = 16
	half    = 1 << (fix - 1)
	yR      = 16829  // 0.299·219/255·65536
	yG      = 33039  // 0.587·219/255·65536
	yB      = 6416   // 0.114·219/255·65536
	cbR     = -9714  // −0.168736·224/255·65536
	cbG     = -19070 // −0.331264·224/255·65536
	cbB     = 28784  // 0.5·224/255·65536
	crR     = 28784  // 0.5·224/255·65536
	crG     = -24103 // −0.418688·224/255·65536
	crB     = -4681  // −0.081312·224/255·65536
	rgbY    = 76309  // 255/219·65536
	rCr     = 104597 // 1.402·255/224·65536
	gCb     = -25675 // −0.344136·255/224·65536
	gCr     = -53279 // −0.714136·255/224·65536
	bCb     = 132201 // 1.772·255/224·65536
	yOffset = 16 << fix
	cOffset = 128 << fix
)

// RGBToYCbCr converts an 8-bit RGB pixel to BT.601 limited range.
func RGBToYCbCr(r, g, b uint8) (y, cb, cr uint8) {
	return rgbToY(int32(r), int32(g), int32(b)), rgbToCb(int32(r), int32(g), int32(b)), rgbToCr(int32(r), int32(g), int32(b))
}

func rgbToY(r, g, b int32) uint8 {
	return uint8((yR*r + yG*g + yB*b + yOffset + half) >> fix) // 16..235, no clamp needed
}

func rgbToCb(r, g, b int32) uint8 {
	return uint8((cbR*r + cbG*g + cbB*b + cOffset + half) >> fix) // 16..240
}

func rgbToCr(r, g, b int32) uint8 {
	return uint8((crR*r + crG*g + crB*b + cOffset + half) >> fix) // 16..240
}

// YCbCrToRGB converts a BT.601 limited-range sample to 8-bit RGB, clamping
// values outside the RGB cube (Y below 16 or above 235 included).
func YCbCrToRGB(y, cb, cr uint8) (r, g, b uint8) {
	yy := (int32(y) - 16) * rgbY
	u, v := int32(cb)-128, int32(cr)-128
	return clamp8((yy + rCr*v + half) >> fix), clamp8((yy + gCb*u + gCr*v + half) >> fix), clamp8((yy + bCb*u + half) >> fix)
}

func clamp8(v int32) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// FromImage converts img to a new I420 frame of the same size (BT.601
// limited range; each chroma sample from the mean RGB of its 2×2 block).
// Translucent pixels are taken as composited over black. img's size must be
// even; its rectangle need not start at the origin. This runs once per avatar
// frame at load time, with a fast path for *image.RGBA and opaque
// *image.NRGBA, the types image/png decodes RGB(A) to.
func FromImage(img image.Image) (*I420, error) {
	b := img.Bounds()
	f, err := alloc(b.Dx(), b.Dy())
	if err != nil {
		return nil, fmt.Errorf("convert %T: %w", img, err)
	}
	switch m := img.(type) {
	case *image.RGBA:
		f.fromPix(m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride)
		return f, nil
	case *image.NRGBA:
		if m.Opaque() {
			f.fromPix(m.Pix[m.PixOffset(b.Min.X, b.Min.Y):], m.Stride)
			return f, nil
		}
	}
	at := rgbGetter(img)
	for y := 0; y < f.Height(); y += 2 {
		for x := 0; x < f.Width(); x += 2 {
			var sr, sg, sb int32
			for dy := 0; dy < 2; dy++ {
				for dx := 0; dx < 2; dx++ {
					r, g, bl := at(b.Min.X+x+dx, b.Min.Y+y+dy)
					f.Y[(y+dy)*f.YStride+x+dx] = rgbToY(r, g, bl)
					sr, sg, sb = sr+r, sg+g, sb+bl
				}
			}
			f.setChroma(x/2, y/2, sr, sg, sb)
		}
	}
	return f, nil
}

// fromPix converts 4-byte RGBX pixels, pix[0] being the frame's top-left.
func (f *I420) fromPix(pix []byte, stride int) {
	w := f.Width()
	for y := 0; y < f.Height(); y += 2 {
		p0, p1 := pix[y*stride:y*stride+4*w], pix[(y+1)*stride:(y+1)*stride+4*w]
		y0, y1 := f.Y[y*f.YStride:y*f.YStride+w], f.Y[(y+1)*f.YStride:(y+1)*f.YStride+w]
		for x := 0; x < w; x += 2 {
			a, b := p0[4*x:4*x+8], p1[4*x:4*x+8]
			r0, g0, b0 := int32(a[0]), int32(a[1]), int32(a[2])
			r1, g1, b1 := int32(a[4]), int32(a[5]), int32(a[6])
			r2, g2, b2 := int32(b[0]), int32(b[1]), int32(b[2])
			r3, g3, b3 := int32(b[4]), int32(b[5]), int32(b[6])
			y0[x], y0[x+1] = rgbToY(r0, g0, b0), rgbToY(r1, g1, b1)
			y1[x], y1[x+1] = rgbToY(r2, g2, b2), rgbToY(r3, g3, b3)
			f.setChroma(x/2, y/2, r0+r1+r2+r3, g0+g1+g2+g3, b0+b1+b2+b3)
		}
	}
}

// setChroma sets the chroma sample (cx, cy) from the sums of its four RGB
// pixels.
func (f *I420) setChroma(cx, cy int, sr, sg, sb int32) {
	sr, sg, sb = (sr+2)>>2, (sg+2)>>2, (sb+2)>>2
	c := cy*f.CStride + cx
	f.Cb[c] = rgbToCb(sr, sg, sb)
	f.Cr[c] = rgbToCr(sr, sg, sb)
}

// rgbGetter returns a function giving the 8-bit premultiplied RGB of img at
// (x, y), in image coordinates.
func rgbGetter(img image.Image) func(x, y int) (r, g, b int32) {
	if m, ok := img.(*image.NRGBA); ok {
		return func(x, y int) (int32, int32, int32) {
			p := m.Pix[m.PixOffset(x, y):]
			a := int32(p[3])
			if a == 255 {
				return int32(p[0]), int32(p[1]), int32(p[2])
			}
			return (int32(p[0])*a + 127) / 255, (int32(p[1])*a + 127) / 255, (int32(p[2])*a + 127) / 255
		}
	}
	return func(x, y int) (int32, int32, int32) {
		r, g, b, _ := img.At(x, y).RGBA() // premultiplied, 16-bit
		return int32(r >> 8), int32(g >> 8), int32(b >> 8)
	}
}

// ToRGBA converts f to a new opaque RGBA image (BT.601 limited range,
// nearest chroma sample), for tests and debug PNGs.
func (f *I420) ToRGBA() *image.RGBA {
	w, h := f.Width(), f.Height()
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		row := dst.Pix[y*dst.Stride : y*dst.Stride+4*w]
		for x := 0; x < w; x++ {
			c := (y/2)*f.CStride + x/2
			r, g, b := YCbCrToRGB(f.Y[y*f.YStride+x], f.Cb[c], f.Cr[c])
			row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = r, g, b, 255
		}
	}
	return dst
}

// RGBFToYCbCr converts RGB in 0..1 to BT.601 limited-range Y, Cb, Cr on the
// 0..255 scale, unrounded (Y 16..235, Cb and Cr 16..240 for inputs in range).
func RGBFToYCbCr(r, g, b float32) (y, cb, cr float32) {
	y = 16 + 65.481*r + 128.553*g + 24.966*b
	cb = 128 - 37.797*r - 74.203*g + 112*b
	cr = 128 + 112*r - 93.786*g - 18.214*b
	return y, cb, cr
}

// YCbCrToRGBF converts BT.601 limited-range Y, Cb, Cr on the 0..255 scale to
// RGB nominally in 0..1, unclamped.
func YCbCrToRGBF(y, cb, cr float32) (r, g, b float32) {
	yy := (y - 16) * (1.0 / 219)
	u, v := (cb-128)*(1.0/224), (cr-128)*(1.0/224)
	return yy + 1.402*v, yy - 0.344136*u - 0.714136*v, yy + 1.772*u
}
