package onnxgen

import "math"

// Face geometry of the default model, in fractions of the crop size S
// (x to the right, y down, 0..1 across the crop).
const (
	mouthX       = 0.50  // mouth centre
	lipY         = 0.74  // lip line: where the lips meet
	mouthHalfW   = 0.21  // half the mouth's width: the opening's extent
	jawHalfW     = 0.36  // half the jaw's width: what moves down
	jawDrop      = 0.075 // lower lip and jaw drop at a = 1
	lipLift      = 0.015 // upper lip rise at a = 1
	liftSpan     = 0.10  // above the lip line, the rise fades in over this
	jawBlend     = 0.08  // below it, the mouth-wide drop widens to the jaw over this
	rigidDepth   = 0.08  // then the drop holds for this, then fades to the bottom edge
	cornerPull   = 0.10  // mouth corners move in by this fraction of their offset
	pullSpan     = 0.08  // vertical extent of the corner pull around the lip line
	openDarkness = 0.9   // weight of the interior colour in the opening at a = 1
)

// mouthInterior is the colour (RGB, 0..1) the opening fades to.
func mouthInterior() []float32 { return []float32{0.20, 0.07, 0.07} }

// mouthField computes the default model's fields for an S×S crop:
//   - base [1,S,S,2]: GridSample's identity grid (x, y normalised to −1..1,
//     align_corners=0: pixel i's centre is (2i+1)/S − 1);
//   - disp [1,S,S,2]: the displacement at a = 1 (the grid at amount a is
//     base + a·disp);
//   - mask [1,1,S,S]: how much of each pixel becomes mouth interior at a = 1.
//
// The vertical motion is defined as a forward map of the reference's
// content, torn open at the lip line: content at height y moves to
// y + f(x, y), with f ≤ 0 above the lip line (upper lip up) and f ≥ 0 below
// (lower lip and jaw down). Each column's map is increasing on both sides of
// the tear, so it is inverted exactly (bisection); output pixels inside the
// tear sample the lip line itself, which the mask then turns into mouth
// interior. The grid at
// amount a interpolates between identity and this inverse, which keeps it
// monotone (no folds) for every a in 0..1.
func mouthField(size int) (base, disp, mask []float32) {
	n := float64(size)
	base = make([]float32, size*size*2)
	disp = make([]float32, size*size*2)
	mask = make([]float32, size*size)
	lip := lipY * n
	for i := range size {
		x := float64(i) + 0.5
		wm, wj := mouthProfile(x/n), jawProfile(x/n)
		fwd := func(y float64) float64 { return y + contentShift(y/n, lip/n, wm, wj)*n }
		top, bot := lip-lipLift*wm*n, lip+jawDrop*wm*n
		for j := range size {
			y := float64(j) + 0.5
			var sy float64
			switch {
			case y <= top:
				sy = invert(fwd, y, -1, lip)
			case y >= bot:
				sy = invert(fwd, y, lip, n+1)
			default:
				sy = lip
			}
			dx := (x - mouthX*n) * cornerPull * wm * (1 - smoothstep(math.Abs(y-lip)/(pullSpan*n)))
			k := (j*size + i) * 2
			base[k] = float32(2*x/n - 1)
			base[k+1] = float32(2*y/n - 1)
			disp[k] = float32(2 * dx / n)
			disp[k+1] = float32(2 * (sy - y) / n)
			// Part of this output row inside the tear [top, bot].
			cover := math.Min(y+0.5, bot) - math.Max(y-0.5, top)
			mask[j*size+i] = float32(openDarkness * math.Max(0, cover))
		}
	}
	return base, disp, mask
}

// contentShift is f(x, y)/S for content at relative height y, the lip line
// at lip, in a column whose mouth and jaw weights are wm and wj.
func contentShift(y, lip, wm, wj float64) float64 {
	if y < lip {
		return -lipLift * wm * smoothstep((y-(lip-liftSpan))/liftSpan)
	}
	w := wm + (wj-wm)*smoothstep((y-lip)/jawBlend)
	hold := lip + rigidDepth
	return jawDrop * w * (1 - smoothstep((y-hold)/(1-hold)))
}

// mouthProfile is the opening's weight across the mouth: 1 at the centre,
// 0 at and beyond the corners, lens-shaped between.
func mouthProfile(x float64) float64 {
	t := math.Abs(x-mouthX) / mouthHalfW
	if t >= 1 {
		return 0
	}
	return math.Pow(1-t*t, 0.7)
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
