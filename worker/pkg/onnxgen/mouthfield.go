package onnxgen

import "math"

// Face geometry of the default model, in fractions of the crop size S
// (x to the right, y down, 0..1 across the crop). The worker aligns its
// crop so that the line where the avatar's mouth opens lies at LipRow and
// the mouth is centred (avatar.MouthRow; a Wav2Lip-family model gets the
// same crop), so these hold for any avatar whose mouth was found.
const (
	LipRow     = 0.70  // where the lips part: avatar.MouthRow
	mouthX     = 0.50  // mouth centre
	mouthHalfW = 0.175 // half the mouth's width (a face's is about 0.34·S in this crop)
	openHalfW  = 0.15  // half the opening's width: inside the corners
	lipCurve   = 0.02  // the line rises by this toward the corners (a smile's curve)
	jawHalfW   = 0.30  // half the jaw's width: what moves down
	jawDrop    = 0.085 // lower lip and jaw drop at a = 1
	lipLift    = 0.012 // upper lip rise at a = 1
	liftSpan   = 0.09  // above the lip line, the rise fades in over this
	jawBlend   = 0.07  // below it, the mouth-wide drop widens to the jaw over this
	rigidDepth = 0.08  // then the drop holds for this, then fades to the bottom edge
	pullSpan   = 0.07  // vertical extent of the width change around the lip line
	// Width of the mouth at a = 1 relative to the closed mouth's, for a
	// rounded (b = 0) and a spread (b = 1) vowel.
	roundedNarrow = 0.16 // corners drawn in by 16 % of their offset
	spreadWiden   = 0.06 // corners pushed out by 6 %
	openDarkness  = 0.94 // weight of the interior colour in the opening
	teethHeight   = 0.30 // teeth hint: top part of the opening, at most
	teethStrength = 0.55 // its weight for a fully spread vowel
	teethMinOpen  = 2.0  // opening, in pixels, below which no teeth show
	openFull      = 2.5  // opening, in pixels, at which it is fully dark
)

// Levels of the fields: the mouth-open amount a at openLevels steps (a = 0
// is the identity and is not stored) and the vowel's spread b at 0 and 1.
// The model blends the two neighbouring levels of a and the two of b.
const (
	openLevels   = 6 // a = 1/5 … 5/5 stored, plus a = 0
	spreadLevels = 2
	fieldLevels  = (openLevels - 1) * spreadLevels
)

// mouthInterior is the colour (RGB, 0..1) of the mouth's inside at pixel
// (x, y) of an S×S crop: dark red, darkest toward the corners and under the
// upper lip, a little lighter low in the middle (the tongue).
func mouthInterior(size int) []float32 {
	n := float64(size)
	out := make([]float32, 3*size*size)
	lip := LipRow * n
	for j := range size {
		y := float64(j) + 0.5
		for i := range size {
			x := float64(i) + 0.5
			side := math.Min(1, math.Abs(x/n-mouthX)/mouthHalfW)
			depth := (y - lip) / (jawDrop * n) // 0 at the line, 1 at full drop
			shade := (1 - 0.6*side*side) * (0.55 + 0.55*smoothstep(depth))
			k := j*size + i
			out[k] = float32(0.36 * shade)
			out[size*size+k] = float32(0.11 * shade)
			out[2*size*size+k] = float32(0.10 * shade)
		}
	}
	return out
}

// teethColour is the teeth hint's colour (RGB, 0..1): off-white in shadow.
func teethColour() []float32 { return []float32{0.80, 0.76, 0.70} }

// mouthLevel is one level's fields for an S×S crop: disp [S,S,2] the
// displacement of GridSample's grid from the identity (normalised units),
// open [S,S] how much of each pixel is mouth interior, teeth [S,S] how much
// of it is teeth hint.
type mouthLevel struct {
	disp, open, teeth []float32
}

// mouthLevels computes the fields at every stored level, a-major: level
// (k, l) is a = (k+1)/(openLevels−1), b = l/(spreadLevels−1).
func mouthLevels(size int) []mouthLevel {
	levels := make([]mouthLevel, 0, fieldLevels)
	for k := 1; k < openLevels; k++ {
		for l := range spreadLevels {
			a := float64(k) / float64(openLevels-1)
			b := float64(l) / float64(spreadLevels-1)
			levels = append(levels, mouthField(size, a, b))
		}
	}
	return levels
}

// identityGrid is GridSample's identity grid [1,S,S,2] (x, y normalised to
// −1..1, align_corners=0: pixel i's centre is (2i+1)/S − 1).
func identityGrid(size int) []float32 {
	n := float64(size)
	g := make([]float32, size*size*2)
	for j := range size {
		for i := range size {
			k := (j*size + i) * 2
			g[k] = float32((2*float64(i)+1)/n - 1)
			g[k+1] = float32((2*float64(j)+1)/n - 1)
		}
	}
	return g
}

// mouthField computes one level: the mouth opened by a (0..1) for a vowel
// of spread b (0 rounded, 1 spread).
//
// The vertical motion is a forward map of the reference's content, torn
// open at the lip line: content at height y moves to y + a·f(x, y), with
// f ≤ 0 above the line (upper lip up) and f ≥ 0 below (lower lip and jaw
// down). Each column's map is increasing on both sides of the tear, so it is
// inverted exactly (bisection); output pixels inside the tear are mouth
// interior (open), the part of their row inside the tear. The width change
// moves columns toward (rounded) or away from (spread) the mouth's centre
// near the lip line, applied before the vertical map. Each level is an
// exact opening; blending two neighbouring levels keeps the grid monotone
// (no folds).
func mouthField(size int, a, b float64) mouthLevel {
	n := float64(size)
	f := mouthLevel{
		disp:  make([]float32, size*size*2),
		open:  make([]float32, size*size),
		teeth: make([]float32, size*size),
	}
	pull := a * (roundedNarrow*(1-b) - spreadWiden*b) // > 0 narrows
	for j := range size {
		y := float64(j) + 0.5
		near := 1 - smoothstep(math.Abs(y-LipRow*n)/(pullSpan*n))
		for i := range size {
			x := float64(i) + 0.5
			// The output column samples source column xs: farther from the
			// centre when the mouth narrows.
			xs := x + (x-mouthX*n)*pull*pullProfile(x/n)*near
			wm, wj := mouthProfile(xs/n), jawProfile(xs/n)
			t := math.Min(1, math.Abs(xs/n-mouthX)/mouthHalfW)
			lip := (LipRow - lipCurve*t*t) * n
			fwd := func(y float64) float64 { return y + a*contentShift(y/n, lip/n, wm, wj)*n }
			top, bot := lip-a*lipLift*wm*n, lip+a*jawDrop*wm*n
			var sy float64
			switch {
			case y <= top:
				sy = invert(fwd, y, -1, lip)
			case y >= bot:
				sy = invert(fwd, y, lip, n+1)
			default:
				sy = lip
			}
			k := j*size + i
			f.disp[2*k] = float32(2 * snap(xs-x) / n)
			f.disp[2*k+1] = float32(2 * snap(sy-y) / n)
			// Part of this output row inside the tear [top, bot].
			cover := math.Max(0, math.Min(y+0.5, bot)-math.Max(y-0.5, top))
			// A thin opening is the lips just parting: it darkens only as
			// it grows to a few pixels.
			f.open[k] = float32(openDarkness * cover * smoothstep((bot-top)/openFull))
			if h := bot - top; h >= teethMinOpen && cover > 0 {
				// The upper teeth: the top of the opening, across the
				// middle of the mouth, stronger for spread vowels.
				band := math.Max(0, math.Min(y+0.5, top+teethHeight*h)-math.Max(y-0.5, top))
				across := 1 - smoothstep((math.Abs(xs/n-mouthX)/mouthHalfW-0.45)/0.4)
				f.teeth[k] = float32(teethStrength * b * band * across * smoothstep((h-teethMinOpen)/teethMinOpen))
			}
		}
	}
	return f
}

// snap is d, or 0 when d (in pixels) is bisection's rounding: where
// nothing moves the displacement is exactly 0, which keeps the model's
// output there exactly the reference.
func snap(d float64) float64 {
	if math.Abs(d) < 1e-6 {
		return 0
	}
	return d
}

// contentShift is f(x, y)/S at a = 1 for content at relative height y, the
// lip line at lip, in a column whose mouth and jaw weights are wm and wj.
func contentShift(y, lip, wm, wj float64) float64 {
	if y < lip {
		return -lipLift * wm * smoothstep((y-(lip-liftSpan))/liftSpan)
	}
	w := wm + (wj-wm)*smoothstep((y-lip)/jawBlend)
	hold := lip + rigidDepth
	return jawDrop * w * (1 - smoothstep((y-hold)/(1-hold)))
}

// mouthProfile is the opening's weight across the mouth: 1 at the centre,
// 0 at and beyond openHalfW (just inside the corners), lens-shaped between.
func mouthProfile(x float64) float64 {
	t := math.Abs(x-mouthX) / openHalfW
	if t >= 1 {
		return 0
	}
	return math.Pow(1-t*t, 0.7)
}

// pullProfile is the width change's weight across the face: 1 over the
// middle of the mouth, fading out past the corners (smoothly enough that
// the columns keep their order).
func pullProfile(x float64) float64 {
	t := math.Abs(x-mouthX) / mouthHalfW
	return 1 - smoothstep((t-0.6)/0.8)
}

// jawProfile is the jaw's weight: flat over the chin, falling to 0 at
// jawHalfW, never below the mouth's weight.
func jawProfile(x float64) float64 {
	t := math.Abs(x-mouthX) / jawHalfW
	return math.Max(mouthProfile(x), 1-smoothstep((t-0.5)/0.5))
}

// invert finds y in [lo, hi] with f(y) = target, f increasing there.
func invert(f func(float64) float64, target, lo, hi float64) float64 {
	for range 50 {
		mid := 0.5 * (lo + hi)
		if f(mid) < target {
			lo = mid
		} else {
			hi = mid
		}
	}
	return 0.5 * (lo + hi)
}

// smoothstep is 0 below 0, 1 above 1, 3t²−2t³ between.
func smoothstep(t float64) float64 {
	if t <= 0 {
		return 0
	}
	if t >= 1 {
		return 1
	}
	return t * t * (3 - 2*t)
}
