// Package facedetect finds faces in a picture with the bundled
// Ultra-Light-Fast-Generic-Face-Detector-1MB (RFB-320, MIT; see
// worker/assets) on ONNX Runtime.
//
// # Pipeline
//
//  1. Resize to 320×240 with golang.org/x/image/draw's BiLinear kernel
//     (it widens when it shrinks, so large photos do not alias). A picture
//     whose aspect ratio is within 1.5× of 4:3 (square, 16:9, 3:4) is
//     stretched to fill the input, as the detector's own demo does
//     (cv2.resize); letterboxing a square photo instead gave a spurious
//     second "face" (score 0.70, the hair) on the astronaut. A more
//     extreme picture is letterboxed: scaled keeping its aspect ratio and
//     centred on neutral gray (127), so faces keep their shape.
//  2. Normalise: RGB planes, (x−127)/128, as the model was trained.
//  3. Run: outputs scores [1,4420,2] (softmaxed background, face) and
//     boxes [1,4420,4] (x1, y1, x2, y2 normalised to the 320×240 input).
//  4. Decode: keep anchors whose face score is above Options.Threshold
//     (0.7), map their boxes back through the letterbox to picture
//     pixels, clamp them to the picture, and apply greedy non-maximum
//     suppression (IoU above Options.IoU, 0.3, drops the lower score).
//
// The model is embedded (worker/assets), so a Detector works from a clone
// and from a binary. It runs on the inference package's process-wide ONNX
// Runtime through an inference.Session, which holds its own reference on
// the environment until Close.
package facedetect

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"sort"

	xdraw "golang.org/x/image/draw"

	"github.com/avatarfleet/avatarfleet/worker/assets"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

// The model's fixed geometry.
const (
	InputWidth  = 320
	InputHeight = 240
	anchors     = 4420
	// stretchLimit is the largest aspect distortion stretched rather than
	// letterboxed.
	stretchLimit = 1.5
)

// Defaults of Options.
const (
	DefaultThreshold = 0.7
	DefaultIoU       = 0.3
)

// MaxPixels bounds the pictures Detect takes (width·height), so a huge
// image cannot make the resize run for long; 8K is about 33 M.
const MaxPixels = 40_000_000

// Options configures New. The zero value uses the embedded model, the
// default thresholds and one CPU thread.
type Options struct {
	// Threshold is the face score an anchor must exceed; 0 means 0.7.
	Threshold float32
	// IoU is the overlap above which NMS drops the lower box; 0 means 0.3.
	IoU float32
	// Model is an ONNX file with the same inputs and outputs; nil means
	// the embedded RFB-320.
	Model []byte
	// Session chooses threads and device.
	Session inference.SessionOptions
}

// Face is one detected face.
type Face struct {
	// Box is in picture pixels, clamped to the picture's bounds.
	Box image.Rectangle
	// Score is the model's face probability, 0..1.
	Score float32
}

// Detector runs the face model. It is safe for concurrent use (Detect
// calls are serialised on the one session).
type Detector struct {
	sess      *inference.Session
	threshold float32
	iou       float32
}

// New opens a detector session on rt.
func New(rt *inference.Runtime, opts Options) (*Detector, error) {
	if opts.Threshold < 0 || opts.Threshold >= 1 || opts.IoU < 0 || opts.IoU >= 1 {
		return nil, fmt.Errorf("facedetect: threshold %v and IoU %v must be in [0,1)", opts.Threshold, opts.IoU)
	}
	d := &Detector{threshold: opts.Threshold, iou: opts.IoU}
	if d.threshold == 0 {
		d.threshold = DefaultThreshold
	}
	if d.iou == 0 {
		d.iou = DefaultIoU
	}
	model := opts.Model
	if model == nil {
		model = assets.FaceDetectorONNX
	}
	sess, err := rt.NewSession("face-detector", model,
		[]inference.TensorSpec{{Name: "input", Shape: []int64{1, 3, InputHeight, InputWidth}}},
		[]inference.TensorSpec{
			{Name: "scores", Shape: []int64{1, anchors, 2}},
			{Name: "boxes", Shape: []int64{1, anchors, 4}},
		}, opts.Session)
	if err != nil {
		return nil, fmt.Errorf("facedetect: %w", err)
	}
	d.sess = sess
	return d, nil
}

// Close frees the session. It is idempotent.
func (d *Detector) Close() error {
	if err := d.sess.Close(); err != nil {
		return fmt.Errorf("facedetect: %w", err)
	}
	return nil
}

// Detect returns the faces in img, highest score first (none is not an
// error).
func (d *Detector) Detect(img image.Image) ([]Face, error) {
	b := img.Bounds()
	if b.Empty() || b.Dx()*b.Dy() > MaxPixels {
		return nil, fmt.Errorf("facedetect: picture %dx%d is empty or above %d pixels", b.Dx(), b.Dy(), MaxPixels)
	}
	lb := letterboxFor(b)
	in := make([]float32, 3*InputHeight*InputWidth)
	normalise(in, lb.draw(img))
	scores := make([]float32, anchors*2)
	boxes := make([]float32, anchors*4)
	if err := d.sess.Run([][]float32{in}, [][]float32{scores, boxes}); err != nil {
		return nil, fmt.Errorf("facedetect: %w", err)
	}
	return decode(scores, boxes, d.threshold, d.iou, lb), nil
}

// letterbox maps between the picture and the model input: the picture's
// bounds b are scaled by sx, sy and placed at (offX, offY) in 320×240.
type letterbox struct {
	b          image.Rectangle
	sx, sy     float64
	offX, offY float64
	dst        image.Rectangle // where the scaled picture lands
}

// letterboxFor fits b into the input. Aspect ratios within stretchLimit of
// the model's 4:3 are stretched to fill it, as the detector's own demo
// does (cv2.resize); wider or taller pictures are letterboxed so faces
// keep their shape.
func letterboxFor(b image.Rectangle) letterbox {
	sx := float64(InputWidth) / float64(b.Dx())
	sy := float64(InputHeight) / float64(b.Dy())
	if r := sx / sy; r > stretchLimit || r < 1/stretchLimit {
		sx = min(sx, sy)
		sy = sx
	}
	w := max(1, min(InputWidth, int(float64(b.Dx())*sx+0.5)))
	h := max(1, min(InputHeight, int(float64(b.Dy())*sy+0.5)))
	x0, y0 := (InputWidth-w)/2, (InputHeight-h)/2
	return letterbox{
		b: b, sx: float64(w) / float64(b.Dx()), sy: float64(h) / float64(b.Dy()),
		offX: float64(x0), offY: float64(y0),
		dst: image.Rect(x0, y0, x0+w, y0+h),
	}
}

// draw renders img into a gray 320×240 canvas.
func (lb letterbox) draw(img image.Image) *image.RGBA {
	canvas := image.NewRGBA(image.Rect(0, 0, InputWidth, InputHeight))
	draw.Draw(canvas, canvas.Rect, image.NewUniform(color.RGBA{R: 127, G: 127, B: 127, A: 255}), image.Point{}, draw.Src)
	xdraw.BiLinear.Scale(canvas, lb.dst, img, lb.b, xdraw.Src, nil)
	return canvas
}

// toPicture maps a point in model-input pixels to picture pixels.
func (lb letterbox) toPicture(x, y float64) (float64, float64) {
	return (x-lb.offX)/lb.sx + float64(lb.b.Min.X), (y-lb.offY)/lb.sy + float64(lb.b.Min.Y)
}

// normalise writes canvas as planar RGB, (x−127)/128.
func normalise(dst []float32, canvas *image.RGBA) {
	const plane = InputWidth * InputHeight
	for y := range InputHeight {
		row := canvas.Pix[y*canvas.Stride : y*canvas.Stride+4*InputWidth]
		for x := range InputWidth {
			i := y*InputWidth + x
			dst[i] = (float32(row[4*x]) - 127) / 128
			dst[plane+i] = (float32(row[4*x+1]) - 127) / 128
			dst[2*plane+i] = (float32(row[4*x+2]) - 127) / 128
		}
	}
}

// decode thresholds, maps and suppresses the model's anchors.
func decode(scores, boxes []float32, threshold, iou float32, lb letterbox) []Face {
	type cand struct {
		x1, y1, x2, y2 float64
		score          float32
	}
	var cands []cand
	for i := range anchors {
		sc := scores[2*i+1]
		if !(sc > threshold) { // also drops NaN
			continue
		}
		x1, y1 := lb.toPicture(float64(boxes[4*i])*InputWidth, float64(boxes[4*i+1])*InputHeight)
		x2, y2 := lb.toPicture(float64(boxes[4*i+2])*InputWidth, float64(boxes[4*i+3])*InputHeight)
		x1, x2 = clampF(x1, lb.b.Min.X, lb.b.Max.X), clampF(x2, lb.b.Min.X, lb.b.Max.X)
		y1, y2 = clampF(y1, lb.b.Min.Y, lb.b.Max.Y), clampF(y2, lb.b.Min.Y, lb.b.Max.Y)
		if x2-x1 < 1 || y2-y1 < 1 {
			continue
		}
		cands = append(cands, cand{x1, y1, x2, y2, sc})
	}
	sort.SliceStable(cands, func(a, b int) bool { return cands[a].score > cands[b].score })
	var kept []cand
	for _, c := range cands {
		keep := true
		for _, k := range kept {
			if overlap(c.x1, c.y1, c.x2, c.y2, k.x1, k.y1, k.x2, k.y2) > float64(iou) {
				keep = false
				break
			}
		}
		if keep {
			kept = append(kept, c)
		}
	}
	faces := make([]Face, len(kept))
	for i, k := range kept {
		r := image.Rect(int(k.x1+0.5), int(k.y1+0.5), int(k.x2+0.5), int(k.y2+0.5))
		faces[i] = Face{Box: r.Intersect(lb.b), Score: k.score}
	}
	return faces
}

// overlap is the intersection over union of two boxes.
func overlap(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2 float64) float64 {
	iw := min(ax2, bx2) - max(ax1, bx1)
	ih := min(ay2, by2) - max(ay1, by1)
	if iw <= 0 || ih <= 0 {
		return 0
	}
	inter := iw * ih
	return inter / ((ax2-ax1)*(ay2-ay1) + (bx2-bx1)*(by2-by1) - inter)
}

func clampF(v float64, lo, hi int) float64 {
	return max(float64(lo), min(float64(hi), v))
}
