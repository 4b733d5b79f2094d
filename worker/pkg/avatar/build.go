package avatar

import (
	"errors"
	"fmt"
	"image"
	"image/draw"
	"math"
	"runtime"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/math/f64"
	"golang.org/x/sync/errgroup"

	"github.com/avatarfleet/avatarfleet/worker/pkg/facedetect"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// Build defaults.
const (
	DefaultBuildFrames = 50 // 2 s at 25 fps; the ping-pong period is 3.9 s
	DefaultBuildFPS    = 25
	// DefaultBreath is the idle loop's peak scale change (0.8 %).
	DefaultBreath = 0.008
	// MaxBreath bounds BuildOptions.Breath (1 %).
	MaxBreath = 0.01
	// ChinPad extends the detector's box downwards by this fraction of its
	// height, so the crop holds the chin (Wav2Lip pads its detector's box
	// by 10 px at the bottom at its usual scale).
	ChinPad = 0.1
)

// ErrFaces is wrapped by Build's error when the photo does not hold
// exactly one face.
const ErrFaces Error = "avatar: need exactly one face"

// Detector finds faces; *facedetect.Detector is one.
type Detector interface {
	Detect(img image.Image) ([]facedetect.Face, error)
}

// BuildOptions configures Build and FromFace.
type BuildOptions struct {
	// Name is the avatar's name (required; see the format).
	Name string
	// Frames is the idle loop's length; 0 means DefaultBuildFrames.
	Frames int
	// FPS is the pack's frame rate; 0 means DefaultBuildFPS.
	FPS int
	// Breath is the peak scale change of the idle motion, 0..MaxBreath;
	// 0 means DefaultBreath, a negative value no motion (every frame the
	// photo itself).
	Breath float64
}

// Build turns one photo into a pack: it detects the face (exactly one, or
// an error wrapping ErrFaces) and calls FromFace with its box.
func Build(img image.Image, det Detector, opts BuildOptions) (*Pack, error) {
	if det == nil || img == nil {
		return nil, errors.New("avatar: Build needs a photo and a detector")
	}
	faces, err := det.Detect(img)
	if err != nil {
		return nil, fmt.Errorf("avatar: building %q: %w", opts.Name, err)
	}
	if len(faces) != 1 {
		return nil, fmt.Errorf("avatar: building %q: %w, found %d", opts.Name, ErrFaces, len(faces))
	}
	return FromFace(img, faces[0].Box, opts)
}

// FromFace builds a pack from a photo whose face box (as a detector gives
// it) is known:
//
//   - The photo is scaled down, keeping its aspect ratio, if it is above
//     the format's size limits, and its last row or column is dropped if
//     its size is odd.
//   - The face box is padded for the lip-sync crop: extended downwards by
//     ChinPad of its height, widened or heightened about its centre into a
//     square, moved (not shrunk) to lie inside the frame (shrunk only if
//     the frame is smaller), and snapped outwards to even coordinates.
//   - The mouth is located within the face box (LocateMouth). If it is
//     found, the crop is moved (same size, by at most 15 % of its side)
//     so that the mouth's centre sits at MouthRow of its height and in the
//     middle of its width (alignBox), and the mouth is stored in the
//     manifest; if not (ErrNoMouth), the pack has no mouth and the crop
//     stays where the face box put it. Other errors fail the build.
//   - Frame i of N is the photo scaled by 1 + Breath·e(i), e(i) = (1 −
//     cos(π·i/(N−1)))/2, about the face box's centre. e eases in and out,
//     so the ping-pong loop turns without a jolt; scaling about the face
//     keeps the face within a pixel of its box (the box is the same for
//     every frame) while the shoulders and background breathe. Scales ≥ 1
//     leave no empty border. Resampling is bilinear (x/image/draw): at
//     these scales it softens by at most half a pixel where the picture
//     moves most (the corners, ±2 px at 512×512), and it costs 17 ms a
//     512×512 frame where Catmull-Rom costs 43 ms, which keeps building
//     the default avatar at start-up cheap.
func FromFace(img image.Image, face image.Rectangle, opts BuildOptions) (*Pack, error) {
	p, err := fromFace(img, face, opts)
	if err != nil {
		return nil, fmt.Errorf("avatar: building %q: %w", opts.Name, err)
	}
	return p, nil
}

func fromFace(img image.Image, face image.Rectangle, opts BuildOptions) (*Pack, error) {
	n, fps, breath := opts.Frames, opts.FPS, opts.Breath
	if n == 0 {
		n = DefaultBuildFrames
	}
	if fps == 0 {
		fps = DefaultBuildFPS
	}
	switch {
	case breath == 0:
		breath = DefaultBreath
	case breath < 0:
		breath = 0
	case breath > MaxBreath || math.IsNaN(breath):
		return nil, fmt.Errorf("%w: breath %v above %v", ErrInvalid, breath, MaxBreath)
	}
	b := img.Bounds()
	face = face.Canon().Intersect(b)
	if face.Dx() < MinBoxSide/2 || face.Dy() < MinBoxSide/2 {
		return nil, fmt.Errorf("%w: face box %v is too small or outside the photo %v", ErrInvalid, face, b)
	}
	base, scale := fit(img)
	face = image.Rect(
		int(float64(face.Min.X-b.Min.X)*scale), int(float64(face.Min.Y-b.Min.Y)*scale),
		int(math.Ceil(float64(face.Max.X-b.Min.X)*scale)), int(math.Ceil(float64(face.Max.Y-b.Min.Y)*scale)))
	w, h := base.Rect.Dx(), base.Rect.Dy()
	box := padBox(face, w, h)
	var mouths []ManifestMouth
	mouth, err := LocateMouth(base, face)
	switch {
	case err == nil:
		if aligned := alignBox(box, mouth, w, h); mouth.Box.In(aligned) {
			box = aligned
		}
		if mouth.Box.In(box) {
			mouths = []ManifestMouth{manifestMouth(mouth)}
		}
	case !errors.Is(err, ErrNoMouth):
		return nil, err
	}
	m := Manifest{
		Name: opts.Name, Version: FormatVersion, Width: w, Height: h, FPS: fps, Frames: n,
		FaceBoxes: [][]int{{box.Min.X, box.Min.Y, box.Dx(), box.Dy()}},
		Idle:      &Idle{Mode: PingPong, First: 0, Last: n - 1},
		Mouths:    mouths,
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	cx := float64(face.Min.X+face.Max.X) / 2
	cy := float64(face.Min.Y+face.Max.Y) / 2
	src := make([]image.Image, n)
	frames := make([]*frame.I420, n)
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range n {
		g.Go(func() error {
			img := breathe(base, cx, cy, 1+breath*ease(i, n))
			f, err := frame.FromImage(img)
			if err != nil {
				return fmt.Errorf("frame %d: %w", i, err)
			}
			src[i], frames[i] = img, f
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return newPack(m, frames, src)
}

// fit copies img into an RGBA at the origin, scaled down to the format's
// limits if needed and cropped to even sizes; scale is the factor applied.
func fit(img image.Image) (*image.RGBA, float64) {
	b := img.Bounds()
	long, short := max(b.Dx(), b.Dy()), min(b.Dx(), b.Dy())
	scale := min(1, float64(MaxLongSide)/float64(long), float64(MaxShortSide)/float64(short))
	w, h := int(float64(b.Dx())*scale), int(float64(b.Dy())*scale)
	w, h = max(2, w&^1), max(2, h&^1)
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	if scale == 1 {
		draw.Draw(out, out.Rect, img, b.Min, draw.Src)
		return out, 1
	}
	// Scale to the un-cropped size, so both axes scale alike.
	fw, fh := int(float64(b.Dx())*scale+0.5), int(float64(b.Dy())*scale+0.5)
	xdraw.CatmullRom.Scale(out, image.Rect(0, 0, fw, fh), img, b, xdraw.Src, nil)
	return out, scale
}

// padBox turns a detector's face box into the lip-sync crop box; see
// FromFace.
func padBox(face image.Rectangle, w, h int) image.Rectangle {
	fw, fh := float64(face.Dx()), float64(face.Dy())*(1+ChinPad)
	s := int(math.Ceil(max(fw, fh)))
	s = min(s+s&1, w, h) // even; w and h are even
	cx := float64(face.Min.X+face.Max.X) / 2
	cy := float64(face.Min.Y) + fh/2
	x0 := max(0, min(int(math.Floor(cx-float64(s)/2)), w-s)) &^ 1
	y0 := max(0, min(int(math.Floor(cy-float64(s)/2)), h-s)) &^ 1
	return image.Rect(x0, y0, x0+s, y0+s)
}

// MouthRow is where alignBox puts the mouth's centre in the lip-sync crop,
// as a fraction of the crop's side from its top (horizontally it is
// centred): in the lower half, where Wav2Lip-family models draw the mouth
// (they mask and regenerate the crop's lower half; their training crops,
// a detector's box padded down to the chin, have the mouth at about 0.7).
const MouthRow = 0.70

// maxAlignShift bounds how far alignBox moves the crop from padBox's
// place, as a fraction of its side, so that a mouth found off its usual
// place cannot move the crop off the face.
const maxAlignShift = 0.15

// alignBox moves the crop box (keeping its size) so that the mouth's
// centre lies at MouthRow of its height and in the middle of its width,
// by at most maxAlignShift of its side, then keeps it inside the w×h
// frame at even coordinates.
func alignBox(box image.Rectangle, m Mouth, w, h int) image.Rectangle {
	s := box.Dx()
	c := m.Center()
	lim := maxAlignShift * float64(s)
	move := func(from int, to float64) int {
		return int(math.Round(min(max(to, float64(from)-lim), float64(from)+lim)))
	}
	x0 := move(box.Min.X, float64(c.X)+0.5-float64(s)/2)
	y0 := move(box.Min.Y, float64(c.Y)+0.5-MouthRow*float64(s))
	x0 = max(0, min(x0, w-s)) &^ 1
	y0 = max(0, min(y0, h-box.Dy())) &^ 1
	return image.Rect(x0, y0, x0+s, y0+box.Dy())
}

// cropFace is about the face box a crop box was padded from (padBox's
// inverse for a face taller than wide: the detector's box is about 0.8 as
// wide as tall). Loading a version-1 pack locates its mouth within it.
func cropFace(crop image.Rectangle) image.Rectangle {
	hf := float64(crop.Dy()) / (1 + ChinPad)
	wf := 0.8 * hf
	cx := float64(crop.Min.X+crop.Max.X) / 2
	return image.Rect(int(cx-wf/2), crop.Min.Y, int(math.Ceil(cx+wf/2)), crop.Min.Y+int(hf)).Intersect(crop)
}

// ease is e(i) of FromFace's idle motion.
func ease(i, n int) float64 {
	if n < 2 {
		return 0
	}
	return (1 - math.Cos(math.Pi*float64(i)/float64(n-1))) / 2
}

// breathe renders base scaled by s about (cx, cy).
func breathe(base *image.RGBA, cx, cy, s float64) *image.RGBA {
	if s == 1 {
		return base
	}
	out := image.NewRGBA(base.Rect)
	// Transform maps source to destination coordinates.
	m := f64.Aff3{s, 0, cx * (1 - s), 0, s, cy * (1 - s)}
	xdraw.BiLinear.Transform(out, m, base, base.Rect, xdraw.Src, nil)
	return out
}
