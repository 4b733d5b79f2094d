package codec

import (
	"image"
	"math"
	"testing"

	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/vpx"
	"github.com/pion/mediadevices/pkg/prop"

	"github.com/avatarfleet/avatarfleet/worker/pkg/codec/codectest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

const fw, fh = 512, 512

// sinTable returns sin(k/period)·amp for k in −off..n−off−1, at index k+off.
func sinTable(n, off int, period, amp float64) []float64 {
	t := make([]float64, n)
	for k := range t {
		t[k] = amp * math.Sin(float64(k-off)/period)
	}
	return t
}

// talkingHead draws frame i of a synthetic talking head into f: a static
// textured backdrop, a face that sways a little and a mouth that opens and
// closes. Most macroblocks stay still from frame to frame, as in the real
// thing.
func talkingHead(f *frame.I420, i int) {
	w, h := f.Width(), f.Height()
	sway := int(math.Round(3 * math.Sin(float64(i)/7)))
	mouth := 4 + 10*math.Abs(math.Sin(float64(i)/2.5))
	bx, by := sinTable(w, 0, 19, 40), sinTable(h, 0, 27, 1)
	fx9, fy11 := sinTable(2*w, w, 9, 12), sinTable(2*h, h, 11, 1)
	for y := 0; y < h; y++ {
		row := f.Y[y*f.YStride : y*f.YStride+w]
		fy := float64(y - 230)
		for x := range row {
			v := 110 + bx[x]*by[y]
			fx := float64(x - 256 - sway)
			if fx*fx/(95*95)+fy*fy/(125*125) < 1 { // face
				v = 170 + fx9[x-256-sway+w]*fy11[y-230+h]
				if mx, my := fx/40, (fy-60)/mouth; mx*mx+my*my < 1 {
					v = 50 // open mouth
				}
				if ex, ey := (math.Abs(fx)-35)/14, (fy+30)/7; ex*ex+ey*ey < 1 {
					v = 40 // eyes
				}
			}
			row[x] = uint8(v)
		}
	}
	cx, cy := sinTable(w/2, 0, 23, 20), sinTable(h/2, 0, 29, 20)
	for y := 0; y < h/2; y++ {
		fy := float64(2*y - 230)
		for x := 0; x < w/2; x++ {
			fx := float64(2*x - 256 - sway)
			cb, cr := 128+cx[x], 128+cy[(y+7)%(h/2)]
			if fx*fx/(95*95)+fy*fy/(125*125) < 1 {
				cb, cr = 110, 150 // skin
			}
			f.Cb[y*f.CStride+x], f.Cr[y*f.CStride+x] = uint8(cb), uint8(cr)
		}
	}
}

// fullMotion draws frame i of a pattern where every macroblock moves: the
// hard case for the encoder.
func fullMotion(f *frame.I420, i int) {
	w, h := f.Width(), f.Height()
	sx := sinTable(w, -3*i, 7, 50)
	cy := sinTable(h, -2*i-100, 9, 1) // ≈ cos: shifted by a quarter period
	diag := sinTable(w+h, h-i, 3, 30)
	for y := 0; y < h; y++ {
		row := f.Y[y*f.YStride : y*f.YStride+w]
		for x := range row {
			row[x] = uint8(128 + sx[x]*cy[y] + diag[x-y+h])
		}
	}
	u, v := sinTable(w/2, -i, 11, 40), sinTable(h/2, i, 13, 40)
	for y := 0; y < h/2; y++ {
		for x := 0; x < w/2; x++ {
			f.Cb[y*f.CStride+x] = uint8(128 + u[x])
			f.Cr[y*f.CStride+x] = uint8(128 + v[y])
		}
	}
}

// newVP8Decoder decodes what src holds, with libvpx through mediadevices.
func newVP8Decoder(t testing.TB, src *codectest.Packets) mdcodec.VideoDecoder {
	t.Helper()
	d, err := vpx.NewDecoder(src, prop.Media{Video: prop.Video{Width: fw, Height: fh}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// yPSNR is the PSNR of img's Y plane against f's.
func yPSNR(t testing.TB, img image.Image, f *frame.I420) float64 {
	t.Helper()
	y, ok := img.(*image.YCbCr)
	if !ok || y.Rect.Dx() != f.Width() || y.Rect.Dy() != f.Height() {
		t.Fatalf("decoded %T %v, want %dx%d YCbCr", img, img.Bounds(), f.Width(), f.Height())
	}
	var se float64
	for r := 0; r < f.Height(); r++ {
		for c := 0; c < f.Width(); c++ {
			d := float64(y.Y[r*y.YStride+c]) - float64(f.Y[r*f.YStride+c])
			se += d * d
		}
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255*float64(f.Width()*f.Height())/se)
}
