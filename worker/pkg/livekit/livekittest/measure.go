package livekittest

import (
	"image"
	"math"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
)

// MouthScore is how far a decoded frame's mouth and jaw (the lower half of
// the face box) are from the closest frame of the avatar's idle loop: the
// mean absolute Y difference. Idle frames score about the encoder's noise.
func MouthScore(img *image.YCbCr, pack *avatar.Pack) float64 {
	best := math.Inf(1)
	for j := range pack.Len() {
		ref, box := pack.Image(j), pack.Box(j)
		var sum float64
		n := 0
		for y := box.Min.Y + box.Dy()/2; y < box.Max.Y; y++ {
			for x := box.Min.X; x < box.Max.X; x++ {
				sum += math.Abs(float64(img.Y[y*img.YStride+x]) - float64(ref.Y[y*ref.YStride+x]))
				n++
			}
		}
		best = min(best, sum/float64(n))
	}
	return best
}

// Window is what the subscriber saw over a span of frames.
type Window struct {
	Frames    int
	FPS       float64
	Max, Mean float64
}

// Measure measures frames.
func Measure(fs []Frame, pack *avatar.Pack) Window {
	var w Window
	if len(fs) < 2 {
		return w
	}
	w.Frames = len(fs)
	w.FPS = float64(len(fs)-1) / fs[len(fs)-1].At.Sub(fs[0].At).Seconds()
	for _, f := range fs {
		s := MouthScore(f.Img, pack)
		w.Max = max(w.Max, s)
		w.Mean += s / float64(len(fs))
	}
	return w
}

// Between are the frames that arrived between from and to.
func Between(fs []Frame, from, to time.Time) []Frame {
	var out []Frame
	for _, f := range fs {
		if f.At.After(from) && f.At.Before(to) {
			out = append(out, f)
		}
	}
	return out
}
