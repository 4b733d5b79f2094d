package avatar

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
)

// Preview limits: the still a pack shows in a catalogue (GET
// /v1/avatars/{name}/preview through the control plane).
const (
	// PreviewMaxSide is the longest side of a preview in pixels.
	PreviewMaxSide = 256
	// PreviewMaxBytes bounds an encoded preview.
	PreviewMaxBytes = 64 << 10
	// PreviewContentType is the media type of an encoded preview.
	PreviewContentType = "image/jpeg"
	previewQuality     = 80
)

// Preview is frame 0 of the pack scaled (area average) so that its longer
// side is at most maxSide pixels (≤ 0 means PreviewMaxSide), encoded as
// JPEG. A pack smaller than that keeps its size.
func (p *Pack) Preview(maxSide int) ([]byte, image.Rectangle, error) {
	if maxSide <= 0 {
		maxSide = PreviewMaxSide
	}
	if len(p.frames) == 0 {
		return nil, image.Rectangle{}, fmt.Errorf("avatar: preview of %q: %w: no frames", p.m.Name, ErrInvalid)
	}
	small := downscale(p.frames[0].ToRGBA(), maxSide)
	for q := previewQuality; ; q -= 20 {
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, small, &jpeg.Options{Quality: q}); err != nil {
			return nil, image.Rectangle{}, fmt.Errorf("avatar: preview of %q: encode: %w", p.m.Name, err)
		}
		if buf.Len() <= PreviewMaxBytes || q <= 20 {
			if buf.Len() > PreviewMaxBytes {
				return nil, image.Rectangle{}, fmt.Errorf("avatar: preview of %q: %d bytes, over %d", p.m.Name, buf.Len(), PreviewMaxBytes)
			}
			return buf.Bytes(), small.Bounds(), nil
		}
	}
}

// downscale shrinks src so that its longer side is at most maxSide, each
// output pixel the mean of the source pixels it covers.
func downscale(src *image.RGBA, maxSide int) *image.RGBA {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	long := max(w, h)
	if long <= maxSide {
		return src
	}
	ow, oh := max(1, w*maxSide/long), max(1, h*maxSide/long)
	dst := image.NewRGBA(image.Rect(0, 0, ow, oh))
	for oy := range oh {
		y0, y1 := oy*h/oh, max((oy+1)*h/oh, oy*h/oh+1)
		for ox := range ow {
			x0, x1 := ox*w/ow, max((ox+1)*w/ow, ox*w/ow+1)
			var sum [4]int
			for y := y0; y < y1; y++ {
				row := src.Pix[(y)*src.Stride:]
				for x := x0; x < x1; x++ {
					px := row[x*4 : x*4+4]
					sum[0] += int(px[0])
					sum[1] += int(px[1])
					sum[2] += int(px[2])
					sum[3] += int(px[3])
				}
			}
			n := (y1 - y0) * (x1 - x0)
			o := dst.Pix[oy*dst.Stride+ox*4:]
			for c := range 4 {
				o[c] = uint8(sum[c] / n)
			}
		}
	}
	return dst
}
