package composite

import (
	"errors"
	"image"
	"image/color"
	"math"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

const (
	fw, fh = 512, 512
	side   = 96
)

// faceBox is about where the face detector finds the default avatar's face.
var faceBox = image.Rect(180, 61, 269, 174)

// scene is a 512×512 RGBA picture: gradients, low-frequency waves and a
// finer texture (periods of 9 to 13 pixels) that resizing blurs a little.
func scene() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, fw, fh))
	for y := 0; y < fh; y++ {
		for x := 0; x < fw; x++ {
			fx, fy := float64(x)/fw, float64(y)/fh
			tex := 0.08 * math.Sin(2*math.Pi*float64(x)/13) * math.Sin(2*math.Pi*float64(y)/9)
			r := 0.45 + 0.35*math.Sin(2*math.Pi*(1.5*fx+0.5*fy)) + tex
			g := 0.2 + 0.6*fy + tex
			b := 0.5 + 0.3*math.Cos(2*math.Pi*2*fy)*math.Sin(2*math.Pi*fx) + tex
			img.SetRGBA(x, y, color.RGBA{uint8(255 * r), uint8(255 * g), uint8(255 * b), 255})
		}
	}
	return img
}

func newCompositor(t testing.TB, feather float64) *Compositor {
	t.Helper()
	c, err := New(Config{FrameWidth: fw, FrameHeight: fh, Box: faceBox, Size: side, Feather: feather})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func avatar(t testing.TB) (*frame.I420, *image.RGBA) {
	t.Helper()
	rgba := scene()
	f, err := frame.FromImage(rgba)
	if err != nil {
		t.Fatal(err)
	}
	return f, rgba
}

func TestConfigErrors(t *testing.T) {
	good := Config{FrameWidth: fw, FrameHeight: fh, Box: faceBox, Size: side}
	for name, mod := range map[string]func(*Config){
		"odd frame":       func(c *Config) { c.FrameWidth = 511 },
		"tiny frame":      func(c *Config) { c.FrameHeight = 2 },
		"odd size":        func(c *Config) { c.Size = 95 },
		"huge size":       func(c *Config) { c.Size = MaxSize + 2 },
		"box outside":     func(c *Config) { c.Box = image.Rect(500, 10, 520, 40) },
		"negative box":    func(c *Config) { c.Box = image.Rect(-4, 10, 40, 40) },
		"empty box":       func(c *Config) { c.Box = image.Rect(10, 10, 10, 40) },
		"feather too big": func(c *Config) { c.Feather = 0.6 },
		"feather NaN":     func(c *Config) { c.Feather = math.NaN() },
	} {
		cfg := good
		mod(&cfg)
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: error %v, want ErrConfig", name, err)
		}
	}
}

func TestSnap(t *testing.T) {
	c := newCompositor(t, 0)
	if got, want := c.Box(), image.Rect(180, 60, 270, 174); got != want {
		t.Errorf("box %v snapped to %v, want %v", faceBox, got, want)
	}
	if got := snap(image.Rect(-3, -1, 3, 1)); got != image.Rect(-4, -2, 4, 2) {
		t.Errorf("snap negative: %v", got)
	}
	if c.InputLen() != 6*side*side || c.OutputLen() != 3*side*side || c.Size() != side {
		t.Error("lengths")
	}
}

func TestTaps(t *testing.T) {
	// Identity: every destination reads its own source sample.
	for d, tp := range taps(8, 8, 3) {
		if int(tp.i)+int(tp.w) != d+3 || (tp.w != 0 && tp.w != 1) {
			t.Errorf("identity tap %d = %+v", d, tp)
		}
	}
	// Halving: destination d sits between sources 2d and 2d+1.
	for d, tp := range taps(4, 8, 0) {
		if int(tp.i) != 2*d || tp.w != 0.5 {
			t.Errorf("halving tap %d = %+v", d, tp)
		}
	}
}

// psnr of the Y planes of a and b, over all of the frame or only r.
func psnr(a, b *frame.I420, r image.Rectangle) float64 {
	var se float64
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			d := float64(a.Y[y*a.YStride+x]) - float64(b.Y[y*b.YStride+x])
			se += d * d
		}
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/(se/float64(r.Dx()*r.Dy())))
}

func TestCropLayout(t *testing.T) {
	c := newCompositor(t, 0)
	av, rgba := avatar(t)
	in := make([]float32, c.InputLen())
	for i := range in {
		in[i] = -1 // everything must be written
	}
	if err := c.Crop(in, av); err != nil {
		t.Fatal(err)
	}
	n := side * side
	for ch := 0; ch < 3; ch++ {
		for y := 0; y < side; y++ {
			for x := 0; x < side; x++ {
				m, r := in[ch*n+y*side+x], in[(3+ch)*n+y*side+x]
				if r < 0 || r > 1 {
					t.Fatalf("reference ch %d (%d,%d) = %v", ch, x, y, r)
				}
				if y < side/2 && m != r {
					t.Fatalf("masked upper half ch %d (%d,%d) = %v, reference %v", ch, x, y, m, r)
				}
				if y >= side/2 && m != 0 {
					t.Fatalf("masked lower half ch %d (%d,%d) = %v, want 0", ch, x, y, m)
				}
			}
		}
	}
	// The reference is the box resized: its centre is the box's centre.
	b := c.Box()
	want := rgba.RGBAAt((b.Min.X+b.Max.X)/2, (b.Min.Y+b.Max.Y)/2)
	o := (side/2)*side + side/2
	for ch, w := range []uint8{want.R, want.G, want.B} {
		if got := in[(3+ch)*n+o] * 255; math.Abs(float64(got)-float64(w)) > 4 {
			t.Errorf("centre ch %d = %.1f, want ≈ %d", ch, got, w)
		}
	}
	// From the RGB frame: the same within chroma subsampling and rounding.
	in2 := make([]float32, c.InputLen())
	if err := c.CropRGBA(in2, rgba); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i := range in {
		worst = max(worst, math.Abs(float64(in[i]-in2[i])))
	}
	if worst > 6.0/255 {
		t.Errorf("Crop and CropRGBA differ by up to %.1f/255", worst*255)
	}
}

func TestPasteReferenceLeavesFrame(t *testing.T) {
	c := newCompositor(t, 0)
	av, _ := avatar(t)
	in := make([]float32, c.InputLen())
	if err := c.Crop(in, av); err != nil {
		t.Fatal(err)
	}
	out := in[3*side*side:] // the model returns its reference
	dst, _ := frame.New(fw, fh)
	if err := c.Composite(dst, av, out); err != nil {
		t.Fatal(err)
	}
	all, box := psnr(av, dst, av.Rect), psnr(av, dst, c.Box())
	t.Logf("Y PSNR after pasting the reference: frame %.1f dB, box %.1f dB", all, box)
	if all < 40 {
		t.Errorf("frame PSNR %.1f dB, want > 40", all)
	}
	if box < 32 {
		t.Errorf("box PSNR %.1f dB, want > 32", box)
	}
}

// outsideUnchanged fails if any sample of dst outside the box differs from av.
func outsideUnchanged(t *testing.T, av, dst *frame.I420, b image.Rectangle) {
	t.Helper()
	for y := 0; y < fh; y++ {
		for x := 0; x < fw; x++ {
			if !(image.Point{x, y}.In(b)) && dst.Y[y*dst.YStride+x] != av.Y[y*av.YStride+x] {
				t.Fatalf("Y (%d,%d) outside the box changed", x, y)
			}
		}
	}
	cb := image.Rect(b.Min.X/2, b.Min.Y/2, b.Max.X/2, b.Max.Y/2)
	for y := 0; y < fh/2; y++ {
		for x := 0; x < fw/2; x++ {
			i := y*dst.CStride + x
			if !(image.Point{x, y}.In(cb)) && (dst.Cb[i] != av.Cb[i] || dst.Cr[i] != av.Cr[i]) {
				t.Fatalf("chroma (%d,%d) outside the box changed", x, y)
			}
		}
	}
}

func TestPasteBlack(t *testing.T) {
	c := newCompositor(t, 0)
	av, _ := avatar(t)
	dst := av.Clone()
	out := make([]float32, c.OutputLen()) // black
	if err := c.Paste(dst, out); err != nil {
		t.Fatal(err)
	}
	b := c.Box()
	cx, cy := (b.Min.X+b.Max.X)/2, (b.Min.Y+b.Max.Y)/2
	if got := dst.Y[cy*dst.YStride+cx]; got != 16 {
		t.Errorf("box centre Y = %d, want 16 (black)", got)
	}
	if got := dst.Cb[(cy/2)*dst.CStride+cx/2]; got != 128 {
		t.Errorf("box centre Cb = %d, want 128", got)
	}
	outsideUnchanged(t, av, dst, b)
}

func TestFeatherRamps(t *testing.T) {
	white, err := frame.New(fw, fh)
	if err != nil {
		t.Fatal(err)
	}
	white.Fill(235, 128, 128)
	out := make([]float32, 3*side*side) // black
	change := func(c *Compositor) []int {
		dst := white.Clone()
		if err := c.Paste(dst, out); err != nil {
			t.Fatal(err)
		}
		outsideUnchanged(t, white, dst, c.Box())
		b := c.Box()
		y := (b.Min.Y + b.Max.Y) / 2
		d := make([]int, b.Dx())
		for x := range d {
			d[x] = 235 - int(dst.Y[y*dst.YStride+b.Min.X+x])
		}
		return d
	}
	c := newCompositor(t, 0)
	d := change(c)
	w := len(d)
	full := 235 - 16
	if d[w/2] != full {
		t.Errorf("centre change %d, want %d", d[w/2], full)
	}
	if d[0] > full/10 || d[w-1] > full/10 {
		t.Errorf("edge changes %d, %d: want < %d (feathered)", d[0], d[w-1], full/10)
	}
	border := int(math.Ceil(DefaultFeather * float64(min(c.Box().Dx(), c.Box().Dy()))))
	for x := 1; x <= border; x++ {
		if d[x] < d[x-1] || d[w-1-x] < d[w-x] {
			t.Errorf("ramp not monotonic at %d: %v", x, d[:border+1])
		}
	}
	if d[border] != full {
		t.Errorf("change %d one border (%d px) in, want %d", d[border], border, full)
	}
	hard := change(newCompositor(t, -1))
	if hard[0] != full || hard[w-1] != full {
		t.Errorf("hard edge changes %d, %d, want %d", hard[0], hard[w-1], full)
	}
}

func TestPasteClampsBadValues(t *testing.T) {
	c := newCompositor(t, 0)
	av, _ := avatar(t)
	out := make([]float32, c.OutputLen())
	for i := range out {
		switch i % 3 {
		case 0:
			out[i] = float32(math.NaN())
		case 1:
			out[i] = 7
		default:
			out[i] = float32(math.Inf(-1))
		}
	}
	if err := c.Paste(av, out); err != nil {
		t.Fatal(err)
	}
}

func TestShapeErrors(t *testing.T) {
	c := newCompositor(t, 0)
	av, rgba := avatar(t)
	small, _ := frame.New(64, 64)
	in := make([]float32, c.InputLen())
	out := make([]float32, c.OutputLen())
	for name, err := range map[string]error{
		"paste small frame":  c.Paste(small, out),
		"paste nil frame":    c.Paste(nil, out),
		"paste short output": c.Paste(av, out[:10]),
		"composite small":    c.Composite(av, small, out),
		"composite short":    c.Composite(av.Clone(), av, out[:10]),
		"crop small frame":   c.Crop(in, small),
		"crop short input":   c.Crop(in[:10], av),
		"crop rgba small":    c.CropRGBA(in, image.NewRGBA(image.Rect(0, 0, 8, 8))),
		"crop rgba nil":      c.CropRGBA(in, nil),
		"crop rgba short":    c.CropRGBA(in[:10], rgba),
	} {
		if !errors.Is(err, ErrShape) {
			t.Errorf("%s: error %v, want ErrShape", name, err)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	c := newCompositor(t, 0)
	av, rgba := avatar(t)
	dst := av.Clone()
	in := make([]float32, c.InputLen())
	out := make([]float32, c.OutputLen())
	for name, f := range map[string]func(){
		"Composite":       func() { _ = c.Composite(dst, av, out) },
		"Paste":           func() { _ = c.Paste(dst, out) },
		"CompositeChange": func() { _ = c.CompositeChange(dst, av, in, out) },
		"Crop":            func() { _ = c.Crop(in, av) },
		"CropRGBA":        func() { _ = c.CropRGBA(in, rgba) },
	} {
		if n := testing.AllocsPerRun(20, f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
}

func BenchmarkComposite(b *testing.B) {
	c := newCompositor(b, 0)
	av, _ := avatar(b)
	dst := av.Clone()
	in := make([]float32, c.InputLen())
	_ = c.Crop(in, av)
	out := in[3*side*side:]
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Composite(dst, av, out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompositeChange(b *testing.B) {
	c := newCompositor(b, 0)
	av, _ := avatar(b)
	dst := av.Clone()
	in := make([]float32, c.InputLen())
	_ = c.Crop(in, av)
	out := append([]float32(nil), in[3*side*side:]...)
	out[40*side+40] = 0 // one changed pixel
	b.ReportAllocs()
	for b.Loop() {
		if err := c.CompositeChange(dst, av, in, out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPaste(b *testing.B) {
	c := newCompositor(b, 0)
	av, _ := avatar(b)
	in := make([]float32, c.InputLen())
	_ = c.Crop(in, av)
	out := in[3*side*side:]
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Paste(av, out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCrop(b *testing.B) {
	c := newCompositor(b, 0)
	av, _ := avatar(b)
	in := make([]float32, c.InputLen())
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Crop(in, av); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCropRGBA(b *testing.B) {
	c := newCompositor(b, 0)
	_, rgba := avatar(b)
	in := make([]float32, c.InputLen())
	b.ReportAllocs()
	for b.Loop() {
		if err := c.CropRGBA(in, rgba); err != nil {
			b.Fatal(err)
		}
	}
}
