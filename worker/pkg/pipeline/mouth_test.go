package pipeline

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"math"
	"slices"
	"testing"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/math/f64"
	"gopkg.in/hraban/opus.v2"

	"github.com/avatarfleet/avatarfleet/worker/assets"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/composite"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/melspec"
)

// The tests of this file check what the default model does to a real face
// (README, "The default model"): it opens the avatar's own mouth where the
// pack says it is, follows the voice, leaves the rest of the photo alone
// and leaves no seam.

// stillPack is the astronaut, or the astronaut mapped by a (a second face:
// no other public-domain photo is available here), built without idle
// motion so every frame is the photo itself.
func stillPack(t testing.TB, a *f64.Aff3) *avatar.Pack {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(assets.AstronautPNG))
	if err != nil {
		t.Fatal(err)
	}
	face := avatar.DefaultFace()
	if a != nil {
		b := img.Bounds()
		dst := image.NewRGBA(b)
		xdraw.CatmullRom.Transform(dst, *a, img, b, xdraw.Src, nil)
		img = dst
		// The face box's corners, mapped.
		x0, y0 := a[0]*float64(face.Min.X)+a[1]*float64(face.Min.Y)+a[2], a[3]*float64(face.Min.X)+a[4]*float64(face.Min.Y)+a[5]
		x1, y1 := a[0]*float64(face.Max.X)+a[1]*float64(face.Max.Y)+a[2], a[3]*float64(face.Max.X)+a[4]*float64(face.Max.Y)+a[5]
		face = image.Rect(int(x0), int(y0), int(x1), int(y1)).Canon()
	}
	p, err := avatar.FromFace(img, face, avatar.BuildOptions{Name: "still", Frames: 2, Breath: -1})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// secondFace mirrors the astronaut, scales her by 0.8 and shifts her.
var secondFace = f64.Aff3{-0.8, 0, 470, 0, 0.8, 60}

// faces are the two faces the default model is checked on.
var faces = []struct {
	name string
	a    *f64.Aff3
}{{"astronaut", nil}, {"second face", &secondFace}}

// defaultContext is a context of the default model, closed when t ends.
func defaultContext(t *testing.T) *inference.Context {
	t.Helper()
	e := newEnv(t)
	c, err := e.model.NewContext(inference.ContextOptions{Batch: 1, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// renderChange runs the model on frame 0 of p with every voice band at
// level (melspec values: −4 is silence) and composites the change; it
// returns the composited frame.
func renderChange(t testing.TB, c *inference.Context, p *avatar.Pack, level float32) *frame.I420 {
	t.Helper()
	comp, err := composite.New(composite.Config{FrameWidth: p.Width(), FrameHeight: p.Height(), Box: p.Box(0), Size: c.Size()})
	if err != nil {
		t.Fatal(err)
	}
	face := make([]float32, c.FaceLen())
	if err := comp.Crop(face, p.Image(0)); err != nil {
		t.Fatal(err)
	}
	mel := make([]float32, c.MelLen())
	for b := range lipsync.MelBands {
		for f := range lipsync.MelFrames {
			v := melspec.Silence
			if b >= 2 && b <= 60 {
				v = level
			}
			mel[b*lipsync.MelFrames+f] = v
		}
	}
	out := make([]float32, c.OutLen())
	if err := c.Run(mel, face, out); err != nil {
		t.Fatal(err)
	}
	dst, err := frame.New(p.Width(), p.Height())
	if err != nil {
		t.Fatal(err)
	}
	if err := comp.CompositeChange(dst, p.Image(0), face, out); err != nil {
		t.Fatal(err)
	}
	return dst
}

// mouthAndJaw is the region the default model may change, from the mouth
// the pack found at build time: the mouth's width and 60 % of it on each
// side (the jaw), from just above the upper lip to the crop's bottom.
func mouthAndJaw(p *avatar.Pack) image.Rectangle {
	m, _ := p.Mouth(0)
	w := m.Right.X - m.Left.X
	lips := m.Lower - m.Upper
	return image.Rect(m.Left.X-w*6/10, m.Upper-max(3, lips*3/10), m.Right.X+w*6/10+1, p.Box(0).Max.Y)
}

// TestDefaultModelMovesOnlyMouthAndJaw: on the astronaut and on a second
// face, speech changes pixels only inside the mouth-and-jaw region found at
// build time (nothing on the forehead, eyes or background), opens a dark
// gap under the line where the lips part, and silence changes nothing.
func TestDefaultModelMovesOnlyMouthAndJaw(t *testing.T) {
	c := defaultContext(t)
	for _, tc := range faces {
		t.Run(tc.name, func(t *testing.T) {
			p := stillPack(t, tc.a)
			m, ok := p.Mouth(0)
			if !ok {
				t.Fatal("no mouth found")
			}
			region := mouthAndJaw(p)
			orig := p.Image(0)
			if got := renderChange(t, c, p, melspec.Silence); !bytes.Equal(got.Y, orig.Y) || !bytes.Equal(got.Cb, orig.Cb) || !bytes.Equal(got.Cr, orig.Cr) {
				t.Error("silence changed the photo")
			}
			for _, level := range []float32{-2, -1, 0} {
				got := renderChange(t, c, p, level)
				var changed int
				for y := range p.Height() {
					for x := range p.Width() {
						if got.Y[y*got.YStride+x] == orig.Y[y*orig.YStride+x] &&
							got.Cb[y/2*got.CStride+x/2] == orig.Cb[y/2*orig.CStride+x/2] &&
							got.Cr[y/2*got.CStride+x/2] == orig.Cr[y/2*orig.CStride+x/2] {
							continue
						}
						changed++
						// Chroma samples cover 2×2 pixels: allow one pixel.
						if !image.Pt(x, y).In(region.Inset(-1)) {
							t.Fatalf("level %v: pixel (%d,%d) changed, outside the mouth and jaw %v", level, x, y, region)
						}
					}
				}
				// The opening: under the line, at the mouth's centre, darker.
				cx := (m.Left.X + m.Right.X) / 2
				var drop float64
				for y := m.Line; y < m.Line+3; y++ {
					for x := cx - 3; x <= cx+3; x++ {
						drop += float64(orig.Y[y*orig.YStride+x]) - float64(got.Y[y*got.YStride+x])
					}
				}
				drop /= 21
				t.Logf("level %v: %d pixels changed inside %v; luma under the line %.0f darker", level, changed, region, drop)
				if level == 0 && drop < 40 {
					t.Errorf("loud: the opening under the line is only %.0f darker; want ≥ 40", drop)
				}
				if changed < 50 {
					t.Errorf("level %v: only %d pixels changed", level, changed)
				}
			}
		})
	}
}

// seam measures a paste's edge: over the pairs of neighbouring pixels that
// straddle the box's edge (one inside, one outside, on all four sides), the
// mean luma step in img and in the photo orig, and the largest amount by
// which img's step exceeds orig's at the same pair.
func seam(img, orig *frame.I420, box image.Rectangle) (step, ownStep, excess float64) {
	var n int
	pair := func(x0, y0, x1, y1 int) {
		d := func(f *frame.I420) float64 {
			return math.Abs(float64(f.Y[y0*f.YStride+x0]) - float64(f.Y[y1*f.YStride+x1]))
		}
		a, b := d(img), d(orig)
		step, ownStep, excess = step+a, ownStep+b, max(excess, a-b)
		n++
	}
	for x := box.Min.X; x < box.Max.X; x++ {
		pair(x, box.Min.Y-1, x, box.Min.Y)
		pair(x, box.Max.Y-1, x, box.Max.Y)
	}
	for y := box.Min.Y; y < box.Max.Y; y++ {
		pair(box.Min.X-1, y, box.Min.X, y)
		pair(box.Max.X-1, y, box.Max.X, y)
	}
	return step / float64(n), ownStep / float64(n), excess
}

// texture is the median luma step between neighbours over the box in
// orig: the photo's own gradient scale.
func texture(orig *frame.I420, box image.Rectangle) float64 {
	var all []float64
	for y := box.Min.Y; y < box.Max.Y-1; y++ {
		for x := box.Min.X; x < box.Max.X-1; x++ {
			p := func(x, y int) float64 { return float64(orig.Y[y*orig.YStride+x]) }
			all = append(all, max(math.Abs(p(x+1, y)-p(x, y)), math.Abs(p(x, y+1)-p(x, y))))
		}
	}
	slices.Sort(all)
	return all[len(all)/2]
}

// TestDefaultModelNoSeam: with the mouth wide open, the gradients across
// the paste's edge stay within the photo's own; a pasted crop with a hard
// edge and a small brightness error (what a seam is) does not.
func TestDefaultModelNoSeam(t *testing.T) {
	c := defaultContext(t)
	for _, tc := range faces {
		t.Run(tc.name, func(t *testing.T) {
			p := stillPack(t, tc.a)
			box := p.Box(0)
			got := renderChange(t, c, p, 0)
			tex := texture(p.Image(0), box)
			step, own, excess := seam(got, p.Image(0), box)
			t.Logf("across the paste edge: mean step %.2f (the photo's %.2f), at most %.0f above the photo's; the photo's median gradient %.0f", step, own, excess, tex)
			if step > own+0.25*tex || excess > 2*tex {
				t.Errorf("across the paste edge: mean step %.2f against the photo's %.2f, at most %.0f above it; the photo's median gradient is %.0f: a seam", step, own, excess, tex)
			}

			// The check can fail: the crop pasted back 8 % brighter with a
			// hard edge shows a seam.
			comp, err := composite.New(composite.Config{FrameWidth: p.Width(), FrameHeight: p.Height(), Box: box, Size: c.Size(), Feather: -1})
			if err != nil {
				t.Fatal(err)
			}
			face := make([]float32, c.FaceLen())
			if err := comp.Crop(face, p.Image(0)); err != nil {
				t.Fatal(err)
			}
			n := c.Size() * c.Size()
			bright := face[3*n:]
			for i := range bright {
				bright[i] = min(1, bright[i]*1.08+0.02)
			}
			seamed, err := frame.New(p.Width(), p.Height())
			if err != nil {
				t.Fatal(err)
			}
			if err := comp.Composite(seamed, p.Image(0), bright); err != nil {
				t.Fatal(err)
			}
			if step, own, excess := seam(seamed, p.Image(0), comp.Box()); step <= own+0.25*tex && excess <= 2*tex {
				t.Errorf("a hard-edged brightened paste: mean step %.2f against %.2f, excess %.0f: the check cannot see seams", step, own, excess)
			}
		})
	}
}

// speech5s is espeak-ng reading a few sentences, cut to 5 s.
func speech5s(t testing.TB, e *env) []float32 {
	t.Helper()
	a, err := e.tts.Synthesize(context.Background(),
		"Hello there. My name is Ava, and I am a digital human. How are you doing today? "+
			"Wow, look at all those boats out on the water.", "")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5 * SampleRate
	if len(a.Samples) < n {
		t.Fatalf("speech is %v long; want ≥ 5 s", a.Duration())
	}
	return a.Samples[:n]
}

// pearson is the correlation coefficient of x and y.
func pearson(x, y []float64) float64 {
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(len(x))
	my /= float64(len(y))
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	return sxy / math.Sqrt(sxx*syy)
}

// TestMouthOpeningFollowsSpeechEnergy: over a 5 s espeak-ng utterance, the
// mouth opening measured in the decoded VP8 stream correlates with the
// energy of the decoded Opus audio sent with each frame (Pearson ≥ 0.6),
// and the stream's changes stay in the mouth and jaw.
func TestMouthOpeningFollowsSpeechEnergy(t *testing.T) {
	e := newEnv(t)
	p := stillPack(t, nil)
	e.pack = p
	h := e.start(t, nil)
	speech := speech5s(t, e)
	if err := h.p.PushPCM(speech); err != nil {
		t.Fatal(err)
	}
	ticks := len(speech)/TickSamples + 2*LatencyTicks + 5
	h.tick(t, ticks)
	video, audio := h.sink.samples()
	frames := decodeAll(t, video, p.Width(), p.Height())

	// Energy of the audio sent with each tick.
	dec, err := opus.NewDecoder(SampleRate, 1)
	if err != nil {
		t.Fatal(err)
	}
	energy := make([]float64, len(video))
	count := make([]int, len(video))
	pcm := make([]float32, SampleRate/10)
	for _, s := range audio {
		n, err := dec.DecodeFloat32(s.Data, pcm)
		if err != nil {
			t.Fatal(err)
		}
		i := int(s.Timestamp / FrameDuration)
		if i < 0 || i >= len(energy) {
			continue
		}
		for _, v := range pcm[:n] {
			energy[i] += float64(v) * float64(v)
		}
		count[i] += n
	}
	for i := range energy {
		energy[i] = math.Sqrt(energy[i] / float64(max(1, count[i])))
	}

	// Opening: how much darker than the photo the band under the line is,
	// over the middle half of the mouth. Elsewhere: the mean difference
	// from the photo outside the mouth and jaw (the encoder's error, and
	// anything that moved).
	m, _ := p.Mouth(0)
	region := mouthAndJaw(p)
	orig := p.Image(0)
	w := m.Right.X - m.Left.X
	depth := p.Box(0).Dy() / 10
	opening := make([]float64, len(frames))
	elsewhere := make([]float64, len(frames))
	for i, f := range frames {
		for y := m.Line; y < m.Line+depth; y++ {
			for x := m.Left.X + w/4; x < m.Right.X-w/4; x++ {
				opening[i] += max(0, float64(orig.Y[y*orig.YStride+x])-float64(f.Y[y*f.YStride+x]))
			}
		}
		var n int
		for y := range p.Height() {
			for x := range p.Width() {
				if !image.Pt(x, y).In(region) {
					elsewhere[i] += math.Abs(float64(orig.Y[y*orig.YStride+x]) - float64(f.Y[y*f.YStride+x]))
					n++
				}
			}
		}
		elsewhere[i] /= float64(n)
	}
	// The frames that carry the utterance.
	first := slices.IndexFunc(energy, func(v float64) bool { return v > 0.01 })
	if first < 0 {
		t.Fatal("no speech in the decoded audio")
	}
	last := min(len(energy), first+len(speech)/TickSamples)
	r := pearson(opening[first:last], energy[first:last])
	// Elsewhere, in frames with and without speech, past the first
	// keyframe's refinement.
	var loud, quiet []float64
	for i := first + 5; i < len(frames); i++ {
		if energy[i] > 0.05 {
			loud = append(loud, elsewhere[i])
		} else if energy[i] < 0.005 {
			quiet = append(quiet, elsewhere[i])
		}
	}
	mean := func(v []float64) float64 {
		var s float64
		for _, x := range v {
			s += x
		}
		return s / float64(max(1, len(v)))
	}
	t.Logf("Pearson(mouth opening, speech energy) over %d frames: %.3f; outside the mouth and jaw the stream differs from the photo by %.2f while speaking (%d frames), %.2f in silence (%d)",
		last-first, r, mean(loud), len(loud), mean(quiet), len(quiet))
	if r < 0.6 {
		t.Errorf("mouth opening and speech energy correlate at %.3f; want ≥ 0.6", r)
	}
	if len(loud) < 20 || len(quiet) < 5 {
		t.Fatalf("%d loud and %d quiet frames: the utterance is not what the test expects", len(loud), len(quiet))
	}
	// Outside the mouth and jaw, speaking frames differ from the photo no
	// more than silent ones do (the encoder's own error).
	if mean(loud) > 1.2*mean(quiet)+0.3 {
		t.Errorf("outside the mouth and jaw: %.2f while speaking, %.2f in silence: the face moves elsewhere", mean(loud), mean(quiet))
	}
}
