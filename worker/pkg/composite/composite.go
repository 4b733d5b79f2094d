// Package composite moves pixels between a full avatar frame and the
// lip-sync model's square face crop: Crop cuts the face box out of a frame
// and resizes it to the model's S×S face input, Paste resizes the model's
// S×S output back to the box and blends it into an I420 frame with a
// feathered edge; PasteChange blends in only the output's difference from
// the reference it was given, for models that change a part of the face.
//
// # Model layout
//
// The model contract (the Wav2Lip shape) takes the face as [B,6,S,S] float32
// in 0..1: channels 0..2 are the crop's R, G, B with the lower half (rows
// S/2..S−1) zeroed, channels 3..5 the same crop unmasked (the reference). It
// returns [B,3,S,S] R, G, B in 0..1. One batch item is 6·S·S (input) or
// 3·S·S (output) consecutive float32s, planar, row-major; callers pass the
// slice of the item they mean. Channel order is R, G, B (the original
// Wav2Lip, trained on OpenCV images, is B, G, R: a drop-in Wav2Lip export
// needs its channels swapped by the caller).
//
// # Geometry
//
// The face box is snapped outwards to even coordinates so that it covers
// whole 2×2 chroma blocks, and must then lie inside the frame. Resizing in
// both directions is bilinear with pixel centres at half-integers and edge
// clamping, the arithmetic of OpenCV's INTER_LINEAR that Wav2Lip's crops
// were made with (no anti-aliasing: a box much larger than 2·S aliases). Chroma
// is resized between the S/2×S/2 and box/2 chroma grids, with chroma samples
// sited at the centre of their 2×2 block (as VP8 does).
//
// # Feather
//
// Paste blends out·α + frame·(1−α) with α = s(dx)·s(dy), where dx and dy are
// a pixel centre's distances to the nearest vertical and horizontal box edge
// divided by the feather width (Config.Feather times the box's shorter side)
// and s is smoothstep clamped to 0..1: α is 1 inside, falls smoothly to
// almost 0 at the box edge, and no seam shows.
//
// # Cost
//
// New precomputes the resize tables and masks for one (frame size, box, S);
// Crop and Paste then allocate nothing. A Compositor keeps scratch buffers,
// so it is for one goroutine at a time (one per session).
package composite

import (
	"fmt"
	"image"
	"math"
)

// Error is the type of this package's sentinel errors.
type Error string

// Error implements error.
func (e Error) Error() string { return string(e) }

// Errors wrapped, with detail, by New, Crop and Paste.
const (
	// ErrConfig: the Config is unusable (sizes, box outside the frame).
	ErrConfig Error = "composite: bad config"
	// ErrShape: a frame, image or tensor slice does not have the
	// configured size.
	ErrShape Error = "composite: wrong shape"
)

// DefaultFeather is the feather width used when Config.Feather is 0, as a
// fraction of the box's shorter side.
const DefaultFeather = 0.1

// MaxSize bounds Config.Size.
const MaxSize = 1024

// Config describes one avatar frame geometry.
type Config struct {
	// FrameWidth and FrameHeight are the avatar frame's size in pixels
	// (even).
	FrameWidth, FrameHeight int
	// Box is the face box in frame pixels (x, y, x+w, y+h); see Geometry.
	// A detector's box can reach past the frame: clamp it (or shift it)
	// into the frame first.
	Box image.Rectangle
	// Size is S, the side of the model's square face crop (96 for
	// Wav2Lip); even, 4..MaxSize.
	Size int
	// Feather is the width of the blend ramp at the box edge as a fraction
	// of the box's shorter side, in 0..0.5; 0 means DefaultFeather and a
	// negative value a hard edge.
	Feather float64
}

// tap is one bilinear sample: src[i]·(1−w) + src[i+1]·w.
type tap struct {
	i int32
	w float32
}

// itap is a tap with w in 1/256ths, for the integer arithmetic of Paste.
type itap struct {
	i, w int32
}

// Compositor crops and pastes for one Config. Make it with New.
type Compositor struct {
	cfg Config
	box image.Rectangle // snapped
	s   int

	// Paste: S → box (luma) and S/2 → box/2 (chroma), per box column and
	// row, and the blend weights per box sample.
	pasteX, pasteY   []itap
	pasteCX, pasteCY []itap
	alphaY, alphaC   []int32 // 0..256
	// Crop: box → S in frame luma coordinates (absolute), and the chroma
	// coordinates of the same output pixels.
	cropX, cropY   []tap
	cropCX, cropCY []tap

	// Scratch: the model output as Y (S×S) and Cb, Cr (S/2×S/2) times 16,
	// and one vertically interpolated row.
	ys, us, vs []int32
	row        []int32
}

// New validates cfg and precomputes everything Crop and Paste need.
func New(cfg Config) (*Compositor, error) {
	fw, fh, s := cfg.FrameWidth, cfg.FrameHeight, cfg.Size
	if fw < 4 || fh < 4 || fw%2 != 0 || fh%2 != 0 {
		return nil, fmt.Errorf("%w: frame %dx%d (want even, at least 4)", ErrConfig, fw, fh)
	}
	if s < 4 || s > MaxSize || s%2 != 0 {
		return nil, fmt.Errorf("%w: size %d (want even, 4..%d)", ErrConfig, s, MaxSize)
	}
	if cfg.Feather > 0.5 || math.IsNaN(cfg.Feather) {
		return nil, fmt.Errorf("%w: feather %v (want ≤ 0.5)", ErrConfig, cfg.Feather)
	}
	b := snap(cfg.Box)
	if b.Dx() < 4 || b.Dy() < 4 || !b.In(image.Rect(0, 0, fw, fh)) {
		return nil, fmt.Errorf("%w: box %v (snapped to %v) is smaller than 4x4 or not inside the %dx%d frame",
			ErrConfig, cfg.Box, b, fw, fh)
	}
	w, h := b.Dx(), b.Dy()
	c := &Compositor{
		cfg: cfg, box: b, s: s,
		pasteX:  itaps(w, s),
		pasteY:  itaps(h, s),
		pasteCX: itaps(w/2, s/2),
		pasteCY: itaps(h/2, s/2),
		cropX:   taps(s, w, b.Min.X),
		cropY:   taps(s, h, b.Min.Y),
		cropCX:  taps(s, w/2, b.Min.X/2),
		cropCY:  taps(s, h/2, b.Min.Y/2),
		ys:      make([]int32, s*s),
		us:      make([]int32, s*s/4),
		vs:      make([]int32, s*s/4),
		row:     make([]int32, s),
	}
	feather := cfg.Feather
	if feather == 0 {
		feather = DefaultFeather
	}
	border := 0.0 // hard edge
	if feather > 0 {
		border = max(1, feather*float64(min(w, h)))
	}
	c.alphaY = mask(w, h, 1, border)
	c.alphaC = mask(w/2, h/2, 2, border)
	return c, nil
}

// snap grows r outwards to even coordinates.
func snap(r image.Rectangle) image.Rectangle {
	r = r.Canon()
	floor2 := func(v int) int { return v - ((v%2)+2)%2 }
	return image.Rect(floor2(r.Min.X), floor2(r.Min.Y), -floor2(-r.Max.X), -floor2(-r.Max.Y))
}

// taps is the bilinear table resizing n source samples to m destination
// samples: destination d reads source position (d+0.5)·n/m − 0.5, clamped to
// the source, plus offset added to the source index.
func taps(m, n, offset int) []tap {
	t := make([]tap, m)
	scale := float64(n) / float64(m)
	for d := range t {
		x := (float64(d)+0.5)*scale - 0.5
		x = min(max(x, 0), float64(n-1))
		i := int(x)
		if i >= n-1 {
			i = n - 2 // read src[n-2]·0 + src[n-1]·1
		}
		t[d] = tap{i: int32(i + offset), w: float32(x - float64(i))}
	}
	return t
}

// itaps is taps(m, n, 0) with weights rounded to 1/256ths.
func itaps(m, n int) []itap {
	t := taps(m, n, 0)
	it := make([]itap, m)
	for d, tp := range t {
		it[d] = itap{i: tp.i, w: int32(math.Round(float64(tp.w) * 256))}
	}
	return it
}

// mask returns the feather weights of a w×h grid whose samples are step box
// pixels apart (1 for luma, 2 for chroma), for a ramp border pixels wide (0:
// a hard edge, all ones), in 1/256ths.
func mask(w, h, step int, border float64) []int32 {
	ramp := func(i, n int) float64 {
		if border == 0 {
			return 1
		}
		c := (float64(i) + 0.5) * float64(step) // sample centre in box pixels
		d := min(c, float64(n*step)-c) / border
		d = min(max(d, 0), 1)
		return d * d * (3 - 2*d) // smoothstep
	}
	a := make([]int32, w*h)
	for y := 0; y < h; y++ {
		ay := ramp(y, h)
		for x := 0; x < w; x++ {
			a[y*w+x] = int32(math.Round(256 * ay * ramp(x, w)))
		}
	}
	return a
}

// Box is the face box as used: Config.Box snapped to even coordinates.
func (c *Compositor) Box() image.Rectangle { return c.box }

// Size is S.
func (c *Compositor) Size() int { return c.s }

// InputLen is the number of float32s of one face input: 6·S·S.
func (c *Compositor) InputLen() int { return 6 * c.s * c.s }

// OutputLen is the number of float32s of one model output: 3·S·S.
func (c *Compositor) OutputLen() int { return 3 * c.s * c.s }

func clamp01(v float32) float32 {
	if !(v > 0) { // NaN too
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}
