package avatar

import (
	"fmt"
	"image"
	"math"
	"slices"
)

// ErrNoMouth is wrapped by LocateMouth's error when the face holds nothing
// that passes for a mouth.
const ErrNoMouth Error = "avatar: no mouth found"

// Mouth is where the lips are in a frame, in frame pixels.
type Mouth struct {
	// Box bounds both lips and the opening between them (Min inclusive,
	// Max exclusive).
	Box image.Rectangle
	// Left and Right are the mouth's corners (Left.X < Right.X), inside
	// Box.
	Left, Right image.Point
	// Upper is the row of the upper lip's top edge, Lower the row of the
	// lower lip's bottom edge and Line the row of the line between the
	// lips (the darkest row between them; when upper teeth show, the row
	// under them, where the mouth opens as the jaw drops), all at the
	// mouth's centre column: Box.Min.Y ≤ Upper ≤ Line ≤ Lower < Box.Max.Y.
	Upper, Line, Lower int
}

// Center is the point between the corners on the line between the lips.
func (m Mouth) Center() image.Point {
	return image.Pt((m.Left.X+m.Right.X)/2, m.Line)
}

// Add is m moved by d.
func (m Mouth) Add(d image.Point) Mouth {
	return Mouth{
		Box: m.Box.Add(d), Left: m.Left.Add(d), Right: m.Right.Add(d),
		Upper: m.Upper + d.Y, Line: m.Line + d.Y, Lower: m.Lower + d.Y,
	}
}

// check reports what is wrong with m inside the frame rectangle frame and
// the face box face.
func (m Mouth) check(frame, face image.Rectangle) error {
	b := m.Box
	in := func(p image.Point) bool { return p.In(b) }
	switch {
	case b.Dx() < MinMouthSide || b.Dy() < MinMouthSide/2:
		return fmt.Errorf("mouth box %v is smaller than %dx%d", b, MinMouthSide, MinMouthSide/2)
	case !b.In(frame):
		return fmt.Errorf("mouth box %v is not inside the frame %v", b, frame)
	case !b.In(face):
		return fmt.Errorf("mouth box %v is not inside the face box %v", b, face)
	case b.Dy() > b.Dx():
		return fmt.Errorf("mouth box %v is taller than it is wide", b)
	case !in(m.Left) || !in(m.Right) || m.Left.X >= m.Right.X:
		return fmt.Errorf("mouth corners %v and %v must lie in the mouth box %v, left of right", m.Left, m.Right, b)
	case m.Upper < b.Min.Y || m.Upper > m.Line || m.Line > m.Lower || m.Lower >= b.Max.Y:
		return fmt.Errorf("lip rows %d, %d, %d must be ordered inside the mouth box %v", m.Upper, m.Line, m.Lower, b)
	}
	return nil
}

// MinMouthSide is the narrowest mouth box the format accepts (its height
// must be at least half of it).
const MinMouthSide = 8

// Where LocateMouth looks, as fractions of the face box (the detector's
// box: brows to chin).
const (
	searchTop    = 0.60 // below the nostrils
	searchBottom = 0.97
	searchSide   = 0.15 // in from each side: not the cheeks' edges
	// groupGap is how far apart (of the face height) the lips may be and
	// still count as one mouth (a smile's teeth lie between them).
	groupGap = 0.10
	// groupSide is how far apart (of the face width) two pieces of one lip
	// may be side by side (a lip's colour can fade in its middle).
	groupSide = 0.2
)

// LocateMouth finds the lips inside face (a face detector's box on img,
// brows to chin; the mouth is looked for in its rows 0.60..0.97 and
// columns 0.15..0.85) by their colour: it measures each pixel's
// pseudo-hue R/(R+G), which is higher on lips than on skin and does not
// change with exposure; pixels well above the lower face's own median
// (the skin: median + max(2 spreads, 0.02), 3×3-smoothed) are lips. The
// mask is closed and split into connected parts; the most central large
// part not cut by the area's top edge (the nose's) is joined with the
// other pieces of the lips (beside it, or above or below it across a dark
// opening or teeth, never across skin) and is the mouth. The corners are
// its ends, extended along the dark line between the lips; the lip rows
// are read at its centre column, the line being the darkest row between
// them.
//
// An error wrapping ErrNoMouth says why nothing was found: skin that is
// not skin-coloured (no redder than green: a grey picture) or too mottled,
// no lip-coloured part, or one whose size (18..80 % of the face's width),
// shape (at least twice as wide as tall, both lips: at least 4 % of the
// face's height at the centre), place (near the face's centre, not a
// band across it) or dark line (at most 0.9 of the skin's luma) is not a
// mouth's. It is meant to fail rather than guess: a washed-out photo or
// lips no redder than the skin give ErrNoMouth.
func LocateMouth(img image.Image, face image.Rectangle) (Mouth, error) {
	face = face.Canon()
	if !face.In(img.Bounds()) || face.Dx() < 24 || face.Dy() < 24 {
		return Mouth{}, fmt.Errorf("%w: face box %v is smaller than 24x24 or not inside the picture %v", ErrNoMouth, face, img.Bounds())
	}
	fw, fh := float64(face.Dx()), float64(face.Dy())
	area := image.Rect(
		face.Min.X+int(searchSide*fw), face.Min.Y+int(searchTop*fh),
		face.Max.X-int(searchSide*fw), face.Min.Y+int(math.Ceil(searchBottom*fh)))
	g := newGrid(img, area)
	mask, err := g.lipMask()
	if err != nil {
		return Mouth{}, err
	}
	parts := components(mask, g.w, g.h)
	minArea := max(6, int(0.002*fw*fh))
	best := -1
	var bestScore float64
	cx := float64(g.w) / 2
	for i, p := range parts {
		// A part cut by the area's top edge is the nose's.
		if len(p.px) < minArea || float64(p.box.Dx()) < 0.08*fw || p.box.Min.Y == 0 {
			continue
		}
		pcx := float64(p.box.Min.X+p.box.Max.X) / 2
		central := 1 - math.Abs(pcx-cx)/(0.5*fw)
		if central <= 0 {
			continue
		}
		if s := float64(len(p.px)) * central * central; s > bestScore {
			best, bestScore = i, s
		}
	}
	if best < 0 {
		return Mouth{}, fmt.Errorf("%w: no lip-coloured part in the lower face %v", ErrNoMouth, area)
	}
	group := g.joinLips(parts, best, int(groupGap*fh), int(groupSide*fw))
	b := image.Rectangle{}
	for _, i := range group {
		b = b.Union(parts[i].box)
	}
	switch {
	case float64(b.Dx()) < 0.18*fw || float64(b.Dx()) > 0.8*fw:
		return Mouth{}, fmt.Errorf("%w: the lip-coloured part %v is %d px wide, not 18..80 %% of the face's %d",
			ErrNoMouth, b.Add(area.Min), b.Dx(), face.Dx())
	case b.Dy() < 2 || float64(b.Dy()) > 0.35*fh || b.Dx() < 2*b.Dy():
		return Mouth{}, fmt.Errorf("%w: the lip-coloured part %v is not a mouth's shape", ErrNoMouth, b.Add(area.Min))
	case math.Abs(float64(b.Min.X+b.Max.X)/2-cx) > 0.15*fw:
		return Mouth{}, fmt.Errorf("%w: the lip-coloured part %v is off the face's centre", ErrNoMouth, b.Add(area.Min))
	case b.Min.Y == 0:
		return Mouth{}, fmt.Errorf("%w: the lip-coloured part %v runs into the nose", ErrNoMouth, b.Add(area.Min))
	case b.Min.X == 0 && b.Max.X == g.w:
		return Mouth{}, fmt.Errorf("%w: the lip-coloured part %v is a band across the face", ErrNoMouth, b.Add(area.Min))
	}
	in := make([]bool, len(mask))
	for _, i := range group {
		for _, k := range parts[i].px {
			in[k] = true
		}
	}
	m := g.shape(in, b)
	if rows := m.Lower - m.Upper + 1; float64(rows) < max(3, minLips*fh) {
		return Mouth{}, fmt.Errorf("%w: the lip-coloured part %v is %d rows tall at its centre: not two lips",
			ErrNoMouth, m.Box.Add(area.Min), rows)
	}
	if line, skin := g.rowLuma(m), g.skinLuma(); line > darkLine*skin {
		return Mouth{}, fmt.Errorf("%w: no dark line between the lips of %v (luma %.0f, skin %.0f)",
			ErrNoMouth, m.Box.Add(area.Min), line, skin)
	}
	c := (m.Left.X + m.Right.X) / 2
	m.Line = g.belowTeeth(in, m.Line, m.Lower, max(m.Box.Min.X, c-m.Box.Dx()/6), min(m.Box.Max.X, c+m.Box.Dx()/6+1))
	m = m.Add(area.Min)
	if err := m.check(img.Bounds(), face); err != nil {
		return Mouth{}, fmt.Errorf("%w: %v", ErrNoMouth, err)
	}
	return m, nil
}

// minLips is the least height of both lips at the mouth's centre, of the
// face's height.
const minLips = 0.04

// darkLine is how dark, relative to the skin's luma, the line between the
// lips (or the opening, or the shadow above the teeth) must be.
const darkLine = 0.90

// rowLuma is the mean luma of m's line over the middle third of its width
// (grid coordinates).
func (g *grid) rowLuma(m Mouth) float64 {
	w := m.Right.X - m.Left.X
	c := (m.Left.X + m.Right.X) / 2
	x0, x1 := max(0, c-w/6), min(g.w, c+w/6+1)
	var sum float64
	for x := x0; x < x1; x++ {
		sum += g.y[m.Line*g.w+x]
	}
	return sum / float64(max(1, x1-x0))
}

// skinLuma is the median luma of the search area.
func (g *grid) skinLuma() float64 {
	med, _ := robust(g.y)
	return med
}

// grid holds the search area's pseudo-hue and luma, row by row.
type grid struct {
	w, h   int
	hue, y []float64
}

func newGrid(img image.Image, r image.Rectangle) *grid {
	g := &grid{w: r.Dx(), h: r.Dy()}
	n := g.w * g.h
	g.hue, g.y = make([]float64, n), make([]float64, n)
	for y := range g.h {
		for x := range g.w {
			cr, cg, cb, _ := img.At(r.Min.X+x, r.Min.Y+y).RGBA()
			R, G, B := float64(cr>>8), float64(cg>>8), float64(cb>>8)
			i := y*g.w + x
			g.y[i] = 0.299*R + 0.587*G + 0.114*B
			// Below R+G = 16 the ratio is noise; such a pixel is
			// nothing's colour.
			g.hue[i] = R / max(R+G, 16)
		}
	}
	return g
}

// lipMask marks the pixels whose (3×3-smoothed) pseudo-hue is well above
// the area's median, then closes the mask with a 3×3 square.
func (g *grid) lipMask() ([]bool, error) {
	sm := blur3(g.hue, g.w, g.h)
	med, spread := robust(sm)
	if med <= 0.5 {
		return nil, fmt.Errorf("%w: the lower face is not skin-coloured (pseudo-hue %.3f, no redder than green)", ErrNoMouth, med)
	}
	if spread > 0.05 {
		return nil, fmt.Errorf("%w: the lower face's colour varies too much (spread %.3f) to tell lips from skin", ErrNoMouth, spread)
	}
	t := med + max(2*spread, 0.02)
	mask := make([]bool, len(sm))
	for i, v := range sm {
		mask[i] = v > t
	}
	return erode(dilate(mask, g.w, g.h), g.w, g.h), nil
}

// shape reads the corners and lip rows of the mouth whose pixels are in
// (within b, grid coordinates).
func (g *grid) shape(in []bool, b image.Rectangle) Mouth {
	// Corners: the mean row of the mouth's pixels in its outermost
	// columns.
	corner := func(x0, x1 int) image.Point {
		var sum, n int
		for x := x0; x < x1; x++ {
			for y := b.Min.Y; y < b.Max.Y; y++ {
				if in[y*g.w+x] {
					sum, n = sum+y, n+1
				}
			}
		}
		return image.Pt((x0+x1-1)/2, (sum+n/2)/max(n, 1))
	}
	edge := max(1, b.Dx()/20)
	left, right := corner(b.Min.X, b.Min.X+edge), corner(b.Max.X-edge, b.Max.X)
	left.X, right.X = b.Min.X, b.Max.X-1
	// Lip rows at the centre: the first and last rows where a quarter of
	// the middle third of the mouth's width is lip.
	cx := (left.X + right.X) / 2
	x0, x1 := max(b.Min.X, cx-b.Dx()/6), min(b.Max.X, cx+b.Dx()/6+1)
	upper, lower := -1, -1
	for y := b.Min.Y; y < b.Max.Y; y++ {
		var lip int
		for x := x0; x < x1; x++ {
			if in[y*g.w+x] {
				lip++
			}
		}
		if 4*lip >= x1-x0 {
			if upper < 0 {
				upper = y
			}
			lower = y
		}
	}
	if upper < 0 {
		upper, lower = b.Min.Y, b.Max.Y-1
	}
	// The line between the lips is the darkest row between their edges;
	// the corners are extended outwards along it while it stays dark.
	line, dark := upper, math.Inf(1)
	for y := upper; y <= lower; y++ {
		var luma float64
		for x := x0; x < x1; x++ {
			luma += g.y[y*g.w+x]
		}
		if luma < dark {
			line, dark = y, luma
		}
	}
	left, right = g.extend(left, -1, b), g.extend(right, 1, b)
	b = b.Union(image.Rectangle{Min: left, Max: left.Add(image.Pt(1, 1))}).
		Union(image.Rectangle{Min: right, Max: right.Add(image.Pt(1, 1))})
	return Mouth{Box: b, Left: left, Right: right, Upper: upper, Line: line, Lower: lower}
}

// minTeethRows is how many rows of teeth under the line make belowTeeth
// move the line.
const minTeethRows = 2

// belowTeeth is where a mouth whose upper teeth show opens: the row under
// the teeth, when rows line+1.. of columns x0..x1 are mostly teeth (not lip,
// brighter and less red than the skin) for at least minTeethRows and a
// lower lip follows; otherwise line. The
// upper teeth stay with the skull when the jaw drops, so a lip-sync model
// opens the mouth between them and the lower lip.
func (g *grid) belowTeeth(in []bool, line, lower, x0, x1 int) int {
	skin := g.skinLuma()
	hue, _ := robust(g.hue)
	teeth := func(y int) bool {
		var n int
		for x := x0; x < x1; x++ {
			// Teeth: brighter than the skin and less red.
			if i := y*g.w + x; !in[i] && g.y[i] > skin && g.hue[i] < hue {
				n++
			}
		}
		return 2*n >= x1-x0
	}
	y := line + 1
	for y < lower && !teeth(y) && y <= line+2 { // the shadow under the lip
		y++
	}
	first := y
	for y < lower && teeth(y) {
		y++
	}
	if y-first < minTeethRows || y >= lower-1 { // teeth, then a lower lip
		return line
	}
	return y
}

// extend moves a corner outwards (dir −1 or +1) while the pixel beyond it,
// within a row of the corner's, is much darker than the skin (the line
// between the lips fading into the corner's shadow), by at most a fifth of
// the mouth's width.
func (g *grid) extend(c image.Point, dir int, b image.Rectangle) image.Point {
	skin, spread := robust(g.y)
	t := skin - max(4*spread, 25)
	for range b.Dx() / 5 {
		x := c.X + dir
		if x < 0 || x >= g.w {
			break
		}
		best, by := math.Inf(1), c.Y
		for y := max(0, c.Y-1); y <= min(g.h-1, c.Y+1); y++ {
			if v := g.y[y*g.w+x]; v < best {
				best, by = v, y
			}
		}
		if best > t {
			break
		}
		c = image.Pt(x, by)
	}
	return c
}

// part is a connected part of a mask: its pixels (indices) and bounds.
type part struct {
	px  []int
	box image.Rectangle
}

// components splits mask into 8-connected parts.
func components(mask []bool, w, h int) []part {
	seen := make([]bool, len(mask))
	var parts []part
	var stack []int
	for start, on := range mask {
		if !on || seen[start] {
			continue
		}
		p := part{}
		seen[start] = true
		stack = append(stack[:0], start)
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			p.px = append(p.px, i)
			x, y := i%w, i/w
			p.box = p.box.Union(image.Rect(x, y, x+1, y+1))
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= w || ny >= h {
						continue
					}
					if j := ny*w + nx; mask[j] && !seen[j] {
						seen[j] = true
						stack = append(stack, j)
					}
				}
			}
		}
		parts = append(parts, p)
	}
	return parts
}

// joinLips is best together with the other pieces of the lips: every part
// that lies beside the group (overlapping half its own rows) within side
// columns of it, and every part (of at least a quarter of best's size)
// that overlaps the group's columns by half its own width, lies within gap
// rows above or below it and is separated from it only by what lies
// between lips (dark opening, or teeth: bright or less red than skin, or
// faint lip colour; not skin): a nostril above the upper lip is not joined, nor any part cut by
// the area's top edge (the nose's).
func (g *grid) joinLips(parts []part, best, gap, side int) []int {
	group := []int{best}
	b := parts[best].box
	medH, sdH := robust(g.hue)
	medY, sdY := robust(g.y)
	between := func(i int) bool {
		return g.y[i] < medY-max(2.5*sdY, 20) || g.y[i] > medY+max(1.5*sdY, 20) ||
			g.hue[i] < medH-max(1.5*sdH, 0.015) || g.hue[i] > medH+sdH
	}
	for changed := true; changed; {
		changed = false
		for i, p := range parts {
			if slices.Contains(group, i) {
				continue
			}
			rows := min(b.Max.Y, p.box.Max.Y) - max(b.Min.Y, p.box.Min.Y)
			hgap := max(p.box.Min.X-b.Max.X, b.Min.X-p.box.Max.X)
			if 2*rows >= p.box.Dy() && hgap <= side && p.box.Min.Y > 0 {
				group = append(group, i)
				b = b.Union(p.box)
				changed = true
				continue
			}
			if 4*len(p.px) < len(parts[best].px) || p.box.Min.Y == 0 {
				continue
			}
			x0, x1 := max(b.Min.X, p.box.Min.X), min(b.Max.X, p.box.Max.X)
			top, bottom := b.Max.Y, p.box.Min.Y // p below the group
			if p.box.Max.Y <= b.Min.Y {
				top, bottom = p.box.Max.Y, b.Min.Y // p above
			}
			if 2*(x1-x0) < p.box.Dx() || bottom-top > gap {
				continue
			}
			var n, inside int
			for y := top; y < bottom; y++ {
				for x := x0; x < x1; x++ {
					n++
					if between(y*g.w + x) {
						inside++
					}
				}
			}
			if 2*inside >= n {
				group = append(group, i)
				b = b.Union(p.box)
				changed = true
			}
		}
	}
	return group
}

// robust is the median of v and its spread (1.4826 × the median absolute
// deviation: the standard deviation for normal data).
func robust(v []float64) (med, spread float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	med = s[len(s)/2]
	for i, x := range v {
		s[i] = math.Abs(x - med)
	}
	slices.Sort(s)
	return med, 1.4826 * s[len(s)/2]
}

// blur3 is a 3×3 box mean, edges clamped.
func blur3(v []float64, w, h int) []float64 {
	out := make([]float64, len(v))
	for y := range h {
		for x := range w {
			var sum float64
			var n int
			for yy := max(0, y-1); yy <= min(h-1, y+1); yy++ {
				for xx := max(0, x-1); xx <= min(w-1, x+1); xx++ {
					sum += v[yy*w+xx]
					n++
				}
			}
			out[y*w+x] = sum / float64(n)
		}
	}
	return out
}

// dilate and erode with a 3×3 square; outside the mask counts as off for
// dilation and on for erosion (so closing does not eat the edges).
func dilate(m []bool, w, h int) []bool { return morph(m, w, h, true) }
func erode(m []bool, w, h int) []bool  { return morph(m, w, h, false) }

func morph(m []bool, w, h int, grow bool) []bool {
	out := make([]bool, len(m))
	for y := range h {
		for x := range w {
			v := !grow
			for yy := max(0, y-1); yy <= min(h-1, y+1); yy++ {
				for xx := max(0, x-1); xx <= min(w-1, x+1); xx++ {
					if m[yy*w+xx] == grow {
						v = grow
					}
				}
			}
			out[y*w+x] = v
		}
	}
	return out
}
