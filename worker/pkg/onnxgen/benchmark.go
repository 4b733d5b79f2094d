package onnxgen

import "math"

// BenchmarkSize is the face crop size of BenchmarkModel (Wav2Lip's 96).
const BenchmarkSize = 96

// benchmarkSeed seeds the weights; changing it changes the file, not the cost.
const benchmarkSeed = 0x5eed_a7a7_f1ee7

// BenchmarkModel returns a model with Wav2Lip's layer shapes (the published
// wav2lip.py generator: an audio encoder over [1,80,16], a face encoder over
// [6,96,96] from 16 to 512 channels down to 1×1, a decoder of transposed
// convolutions back to 96×96 with the face encoder's skip connections, and
// a Sigmoid output convolution to 3 channels) and fixed pseudo-random
// weights. Batch normalisation is taken as folded into the convolutions'
// biases, as an exported inference graph has it. The output is meaningless;
// the compute cost (about 4 GMAC per frame) and the memory (36 M parameters,
// a 145 MB file) are realistic. Inputs and output follow the
// contract with B dynamic and S = 96.
func BenchmarkModel() ([]byte, error) {
	g := &wav2lip{b: NewBuilder("avatarfleet_benchmark_wav2lip"), rng: prng{state: benchmarkSeed}}
	b := g.b
	batch := Dynamic("B")
	mel := b.Input(MelInput, batch, Fixed(1), Fixed(MelBands), Fixed(MelFrames))
	face := b.Input(FaceInput, batch, Fixed(6), Fixed(BenchmarkSize), Fixed(BenchmarkSize))

	// Audio encoder: [1,80,16] → [512,1,1].
	x := g.conv(mel, 1, 32, 3, 1, 1, 1)
	x = g.res(x, 32, 2)
	x = g.conv(x, 32, 64, 3, 3, 1, 1)
	x = g.res(x, 64, 2)
	x = g.conv(x, 64, 128, 3, 3, 3, 1)
	x = g.res(x, 128, 2)
	x = g.conv(x, 128, 256, 3, 3, 2, 1)
	x = g.res(x, 256, 1)
	x = g.conv(x, 256, 512, 3, 1, 1, 0)
	audio := g.conv(x, 512, 512, 1, 1, 1, 0)

	// Face encoder: [6,96,96] → 96, 48, 24, 12, 6, 3, 1; each stage's output
	// is a skip connection into the decoder.
	var skips []string
	y := g.conv(face, 6, 16, 7, 1, 1, 3)
	skips = append(skips, y)
	for _, st := range []struct{ in, out, res int }{{16, 32, 2}, {32, 64, 3}, {64, 128, 2}, {128, 256, 2}, {256, 512, 1}} {
		y = g.conv(y, st.in, st.out, 3, 2, 2, 1)
		y = g.res(y, st.out, st.res)
		skips = append(skips, y)
	}
	y = g.conv(y, 512, 512, 3, 1, 1, 0)
	y = g.conv(y, 512, 512, 1, 1, 1, 0)
	skips = append(skips, y)

	// Decoder: each block's output is concatenated with the matching skip.
	cat := func(v string) string {
		s := skips[len(skips)-1]
		skips = skips[:len(skips)-1]
		return b.Op("Concat", []string{v, s}, IntAttr("axis", 1))
	}
	d := cat(g.conv(audio, 512, 512, 1, 1, 1, 0))           // 1×1, 1024
	d = cat(g.res(g.deconv(d, 1024, 512, 1, 0, 0), 512, 1)) // 3×3, 1024
	d = cat(g.res(g.deconv(d, 1024, 512, 2, 1, 1), 512, 2)) // 6×6, 768
	d = cat(g.res(g.deconv(d, 768, 384, 2, 1, 1), 384, 2))  // 12×12, 512
	d = cat(g.res(g.deconv(d, 512, 256, 2, 1, 1), 256, 2))  // 24×24, 320
	d = cat(g.res(g.deconv(d, 320, 128, 2, 1, 1), 128, 2))  // 48×48, 160
	d = cat(g.res(g.deconv(d, 160, 64, 2, 1, 1), 64, 2))    // 96×96, 80
	d = g.conv(d, 80, 32, 3, 1, 1, 1)
	logits := g.convLinear(d, 32, 3, 1, 0)
	b.OpTo(FaceOutput, "Sigmoid", []string{logits})
	b.Output(FaceOutput, batch, Fixed(3), Fixed(BenchmarkSize), Fixed(BenchmarkSize))
	return b.Model().Marshal(), nil
}

// wav2lip builds the benchmark graph.
type wav2lip struct {
	b   *Builder
	rng prng
}

// conv is Wav2Lip's Conv2d block: convolution (batch norm folded in), ReLU.
// Stride is given per axis (sh, sw) as the audio encoder needs.
func (g *wav2lip) conv(x string, cin, cout, k, sh, sw, pad int) string {
	return g.b.Op("Relu", []string{g.convOp(x, cin, cout, k, sh, sw, pad, 1)})
}

// res is n residual blocks: ReLU(conv(x) + x), 3×3, same channels.
func (g *wav2lip) res(x string, c, n int) string {
	for range n {
		x = g.b.Op("Relu", []string{g.b.Op("Add", []string{g.convOp(x, c, c, 3, 1, 1, 1, 0.5), x})})
	}
	return x
}

// convLinear is a convolution without activation.
func (g *wav2lip) convLinear(x string, cin, cout, k, pad int) string {
	return g.convOp(x, cin, cout, k, 1, 1, pad, 1)
}

func (g *wav2lip) convOp(x string, cin, cout, k, sh, sw, pad int, gain float64) string {
	w := g.weights(cout*cin*k*k, gain*math.Sqrt(6/float64(cin*k*k)))
	bias := g.weights(cout, 0.01)
	kk := int64(k)
	return g.b.Op("Conv", []string{x, g.b.Const([]int64{int64(cout), int64(cin), kk, kk}, w), g.b.Const([]int64{int64(cout)}, bias)},
		IntsAttr("kernel_shape", kk, kk), IntsAttr("strides", int64(sh), int64(sw)),
		IntsAttr("pads", int64(pad), int64(pad), int64(pad), int64(pad)))
}

// deconv is Wav2Lip's Conv2dTranspose block (3×3): transposed convolution,
// ReLU.
func (g *wav2lip) deconv(x string, cin, cout, stride, pad, outPad int) string {
	const k = 3
	fanIn := float64(cin*k*k) / float64(stride*stride)
	w := g.weights(cin*cout*k*k, math.Sqrt(6/fanIn))
	bias := g.weights(cout, 0.01)
	y := g.b.Op("ConvTranspose", []string{x, g.b.Const([]int64{int64(cin), int64(cout), k, k}, w), g.b.Const([]int64{int64(cout)}, bias)},
		IntsAttr("kernel_shape", k, k), IntsAttr("strides", int64(stride), int64(stride)),
		IntsAttr("pads", int64(pad), int64(pad), int64(pad), int64(pad)),
		IntsAttr("output_padding", int64(outPad), int64(outPad)))
	return g.b.Op("Relu", []string{y})
}

// weights draws n values uniformly from (−limit, limit).
func (g *wav2lip) weights(n int, limit float64) []float32 {
	lim := float32(limit)
	w := make([]float32, n)
	for i := range w {
		w[i] = g.rng.symmetric() * lim
	}
	return w
}

// prng is SplitMix64: tiny, and its sequence is fixed here, not by a
// library that may change it between Go releases.
type prng struct{ state uint64 }

func (p *prng) next() uint64 {
	p.state += 0x9e3779b97f4a7c15
	z := p.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// symmetric is uniform in [−1, 1) on a 2⁻²³ lattice (exact in float32).
func (p *prng) symmetric() float32 {
	return float32(int64(p.next()>>40)-(1<<23)) / (1 << 23)
}
