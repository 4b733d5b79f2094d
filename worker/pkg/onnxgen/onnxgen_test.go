package onnxgen

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestGenerationIsByteStable(t *testing.T) {
	gens := map[string]func() ([]byte, error){"default": DefaultModel, "benchmark": BenchmarkModel}
	if testing.Short() {
		delete(gens, "benchmark")
	}
	for name, gen := range gens {
		a, err := gen()
		if err != nil {
			t.Fatal(err)
		}
		sumA := sha256.Sum256(a)
		a = nil // the benchmark model is 145 MB
		b, err := gen()
		if err != nil {
			t.Fatal(err)
		}
		if sumB := sha256.Sum256(b); sumA != sumB {
			t.Errorf("%s model: two generations differ", name)
		}
		t.Logf("%s model: %d bytes", name, len(b))
	}
}

// fields decodes one message level: field number → raw values (varints as
// their value in 8 bytes, length-delimited as bytes).
func fields(t *testing.T, b []byte) map[protowire.Number][][]byte {
	t.Helper()
	out := map[protowire.Number][][]byte{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		switch typ {
		case protowire.VarintType:
			x, m := protowire.ConsumeVarint(b)
			n = m
			v = binary.LittleEndian.AppendUint64(nil, x)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			v = binary.LittleEndian.AppendUint32(nil, x)
		default:
			t.Fatalf("unexpected wire type %v", typ)
		}
		if n < 0 {
			t.Fatalf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		out[num] = append(out[num], v)
	}
	return out
}

func varint(v []byte) uint64 { return binary.LittleEndian.Uint64(v) }

// The default model's wire format, read back with the ONNX field numbers.
func TestDefaultModelWireFormat(t *testing.T) {
	data, err := DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	model := fields(t, data)
	if got := varint(model[modelIRVersion][0]); got != IRVersion {
		t.Errorf("ir_version %d", got)
	}
	if got := string(model[modelProducer][0]); got != Producer {
		t.Errorf("producer_name %q", got)
	}
	opset := fields(t, model[modelOpsetImport][0])
	if got := varint(opset[opsetVersion][0]); got != Opset {
		t.Errorf("opset version %d", got)
	}
	graph := fields(t, model[modelGraph][0])
	var ops []string
	for _, n := range graph[graphNode] {
		ops = append(ops, string(fields(t, n)[nodeOpType][0]))
	}
	for _, op := range []string{"Conv", "MatMul", "GridSample", "Clip"} {
		if !slices.Contains(ops, op) {
			t.Errorf("ops %v: no %s", ops, op)
		}
	}
	if ops[len(ops)-1] != "Clip" {
		t.Errorf("last op %s; want Clip", ops[len(ops)-1])
	}
	meta := map[string]string{}
	for _, e := range model[modelMetadataProps] {
		f := fields(t, e)
		meta[string(f[entryKey][0])] = string(f[entryValue][0])
	}
	if meta[MetaLookAhead] != strconv.Itoa(DefaultLookAheadMS) || meta[MetaPaste] != "change" {
		t.Errorf("metadata %v; want %s=%d and %s=change", meta, MetaLookAhead, DefaultLookAheadMS, MetaPaste)
	}
	var inputs []string
	for _, in := range graph[graphInput] {
		inputs = append(inputs, string(fields(t, in)[valueInfoName][0]))
	}
	if !slices.Equal(inputs, []string{MelInput, FaceInput}) {
		t.Errorf("inputs %v", inputs)
	}
	// The face input's shape: [B (dim_param), 6, 96, 96].
	typ := fields(t, fields(t, graph[graphInput][1])[valueInfoType][0])
	tensor := fields(t, typ[typeTensorType][0])
	if got := varint(tensor[tensorElemType][0]); got != uint64(Float) {
		t.Errorf("face elem_type %d", got)
	}
	var dims []string
	for _, d := range fields(t, tensor[tensorShape][0])[shapeDim] {
		f := fields(t, d)
		if p, ok := f[dimParam]; ok {
			dims = append(dims, string(p[0]))
		} else {
			dims = append(dims, strconv.FormatUint(varint(f[dimValue][0]), 10))
		}
	}
	if !slices.Equal(dims, []string{"B", "6", "96", "96"}) {
		t.Errorf("face dims %v", dims)
	}
	// An initializer: raw little-endian float32 of the declared size.
	for _, raw := range graph[graphInitializer] {
		f := fields(t, raw)
		n := uint64(1)
		for _, d := range f[tensorDims] {
			n *= varint(d)
		}
		size := uint64(4)
		if varint(f[tensorDataType][0]) == uint64(Int64) {
			size = 8
		}
		if got := uint64(len(f[tensorRawData][0])); got != n*size {
			t.Errorf("initializer %s: %d raw bytes for %d elements", f[tensorName][0], got, n)
		}
	}
}

// feature is the logit of channel ch of featureWeights for a window whose
// bands have value level(band) in every frame.
func feature(w, bias []float32, ch int, level func(band int) float64) float64 {
	z := float64(bias[ch])
	for band := range MelBands {
		for t := range MelFrames {
			z += float64(w[ch*MelBands*MelFrames+band*MelFrames+t]) * level(band)
		}
	}
	return z
}

func TestFeatureWeights(t *testing.T) {
	w, bias := featureWeights(DefaultLookAheadMS)
	sig := func(z float64) float64 { return 1 / (1 + math.Exp(-z)) }
	flat := func(v float64) func(int) float64 { return func(int) float64 { return v } }
	if s := sig(feature(w, bias, 0, flat(-4))); s > 0.003 {
		t.Errorf("silence opens the mouth by %.4f; want ≈ 0", s)
	}
	if m := sig(feature(w, bias, 0, flat(openMidpoint))); math.Abs(m-0.5) > 1e-3 {
		t.Errorf("midpoint gives %.4f; want 0.5", m)
	}
	if l := sig(feature(w, bias, 0, flat(0))); l < 0.95 {
		t.Errorf("a loud voice opens the mouth by %.3f; want nearly fully", l)
	}
	// Spread: a front vowel's energy in the second formant's bands, a
	// rounded one's below 450 Hz and near 1 kHz.
	ee := func(band int) float64 {
		if band >= spreadF2Lo && band <= spreadF2Hi {
			return -0.3
		}
		return -2.0
	}
	oo := func(band int) float64 {
		if band >= 3 && band <= 9 || band >= 24 && band <= 33 {
			return 0
		}
		return -2.5
	}
	if b := sig(feature(w, bias, 1, ee)); b < 0.8 {
		t.Errorf("a spread vowel gives b = %.3f; want ≥ 0.8", b)
	}
	if b := sig(feature(w, bias, 1, oo)); b > 0.2 {
		t.Errorf("a rounded vowel gives b = %.3f; want ≤ 0.2", b)
	}
	// Only the voice range counts, and the weight peaks just after the
	// frame's own time (80 ms before the window's end).
	peak := 0
	for tt := range MelFrames {
		if w[10*MelFrames+tt] > w[10*MelFrames+peak] {
			peak = tt
		}
	}
	if want := int(frameCentre(DefaultLookAheadMS) + 0.5); peak != want && peak != want-1 {
		t.Errorf("loudness weight peaks at mel frame %d; want %d (the frame's own time)", peak, want)
	}
	for band := range MelBands {
		if (band < voiceBandLo || band > voiceBandHi) && w[band*MelFrames] != 0 {
			t.Errorf("band %d outside the voice range has weight %v", band, w[band*MelFrames])
		}
	}
}

func TestFrameCentre(t *testing.T) {
	for _, tc := range []struct {
		ms   int
		want float64
	}{{200, 3}, {80, 13}, {0, 19}} {
		if got := frameCentre(tc.ms); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("frameCentre(%d) = %v; want %v", tc.ms, got, tc.want)
		}
	}
}

func TestMouthField(t *testing.T) {
	const s = DefaultSize
	base := identityGrid(s)
	lip := LipRow * s
	for li, l := range mouthLevels(s) {
		a := float64(li/spreadLevels+1) / float64(openLevels-1)
		at := func(f []float32, x, y, c int) float64 { return float64(f[(y*s+x)*2+c]) }
		for y := range s {
			for x := range s {
				for c := range 2 {
					d := at(l.disp, x, y, c) * s / 2 // in pixels
					// Only the lower face moves; the crop's edges stay put.
					if (float64(y) < lip-(lipLift+liftSpan+lipCurve)*s || x == 0 || x == s-1 || y == s-1) && math.Abs(d) > 0.05 {
						t.Fatalf("level %d: pixel (%d,%d) moves by %.3f px (axis %d); want 0", li, x, y, d, c)
					}
					if math.Abs(d) > 0.1*s {
						t.Fatalf("level %d: pixel (%d,%d) moves by %.1f px", li, x, y, d)
					}
				}
				k := y*s + x
				if o := l.open[k]; o < 0 || o > openDarkness || (o > 0 && math.Abs(float64(y)-lip) > (jawDrop+lipCurve)*s+1) {
					t.Fatalf("level %d: open(%d,%d) = %v", li, x, y, o)
				}
				if th := l.teeth[k]; th < 0 || th > l.open[k]+1e-6 {
					t.Fatalf("level %d: teeth(%d,%d) = %v outside the opening (%v)", li, x, y, th, l.open[k])
				}
			}
		}
		// Each column's sampling position is non-decreasing (no folds;
		// the width change shifts the curved lip line by hundredths of
		// a pixel between rows), and so is each row's.
		const fold = 0.05 * 2 / s
		for x := range s {
			prev := math.Inf(-1)
			for y := range s {
				sy := at(base, x, y, 1) + at(l.disp, x, y, 1)
				if sy < prev-fold {
					t.Fatalf("level %d: column %d folds at row %d by %.4f px", li, x, y, (prev-sy)*s/2)
				}
				prev = sy
			}
		}
		for y := range s {
			prev := math.Inf(-1)
			for x := range s {
				sx := at(base, x, y, 0) + at(l.disp, x, y, 0)
				if sx < prev-fold {
					t.Fatalf("level %d: row %d folds at column %d", li, y, x)
				}
				prev = sx
			}
		}
		// The middle column opens by the level's amount.
		var open float64
		for y := range s {
			open += float64(l.open[y*s+s/2]) / openDarkness
		}
		if want := a * (jawDrop + lipLift) * s; math.Abs(open-want) > 0.5 {
			t.Errorf("level %d (a=%.2f): centre column opening %.2f px; want %.2f", li, a, open, want)
		}
	}
}

// A rounded vowel's opening is narrower than a spread one's at the same a.
func TestMouthFieldWidth(t *testing.T) {
	const s = DefaultSize
	lip := LipRow * s
	width := func(f mouthLevel) int {
		row := int(lip) + 1
		n := 0
		for x := range s {
			if f.open[row*s+x] > 0.5 {
				n++
			}
		}
		return n
	}
	rounded, spread := width(mouthField(s, 1, 0)), width(mouthField(s, 1, 1))
	if rounded >= spread-2 {
		t.Errorf("opening %d px wide for a rounded vowel, %d for a spread one; want clearly narrower", rounded, spread)
	}
	var teeth float64
	for _, v := range mouthField(s, 1, 1).teeth {
		teeth += float64(v)
	}
	var none float64
	for _, v := range mouthField(s, 1, 0).teeth {
		none += float64(v)
	}
	if teeth < 5 || none != 0 {
		t.Errorf("teeth hint: %.1f for a spread vowel, %.1f for a rounded one; want some and none", teeth, none)
	}
}

func TestDefaultModelSizes(t *testing.T) {
	for _, size := range []int{8, 15, 513, 1024} {
		if _, err := DefaultModelOfSize(size); err == nil {
			t.Errorf("size %d accepted", size)
		}
	}
	for _, size := range []int{16, 64} {
		if _, err := DefaultModelOfSize(size); err != nil {
			t.Errorf("size %d: %v", size, err)
		}
	}
}

func TestBuilderAndMarshalSmall(t *testing.T) {
	b := NewBuilder("g")
	x := b.Input("x", Dynamic("N"), Fixed(2))
	b.OpTo("y", "Mul", []string{x, b.Scalar(2)}, FloatAttr("unused", 1.5), IntsAttr("ints", 1, 2))
	b.Output("y", Dynamic("N"), Fixed(2))
	m := b.Model()
	data := m.Marshal()
	if !bytes.Equal(data, b.Model().Marshal()) {
		t.Error("marshal not deterministic")
	}
	graph := fields(t, fields(t, data)[modelGraph][0])
	node := fields(t, graph[graphNode][0])
	if got := string(node[nodeName][0]); got != "Mul_0" {
		t.Errorf("node name %q", got)
	}
	attrs := node[nodeAttribute]
	if len(attrs) != 2 {
		t.Fatalf("%d attributes", len(attrs))
	}
	f := fields(t, attrs[0])
	if math.Float32frombits(binary.LittleEndian.Uint32(f[attrF][0])) != 1.5 || varint(f[attrType][0]) != uint64(AttrFloat) {
		t.Errorf("float attribute %v", f)
	}
	ints := fields(t, attrs[1])
	if len(ints[attrInts]) != 2 || varint(ints[attrType][0]) != uint64(AttrInts) {
		t.Errorf("ints attribute %v", ints)
	}
	init := fields(t, graph[graphInitializer][0])
	if len(init[tensorDims]) != 0 || len(init[tensorRawData][0]) != 4 {
		t.Errorf("scalar initializer %v", init)
	}
}

// The region the model may change is the mouth and the jaw: nothing above
// the upper lip's reach, nothing beside the jaw.
func TestMouthRegion(t *testing.T) {
	const s = DefaultSize
	r := mouthRegion(s)
	top := (LipRow - lipCurve - lipLift - liftSpan) * s
	var n int
	for y := range s {
		for x := range s {
			if r[y*s+x] == 0 {
				continue
			}
			n++
			if float64(y) < top-2 || math.Abs(float64(x)+0.5-mouthX*s) > jawHalfW*s+2 {
				t.Fatalf("region includes (%d,%d): above row %.1f or beside the jaw", x, y, top)
			}
		}
	}
	if n < s*s/10 || n > s*s/3 {
		t.Errorf("region covers %d of %d pixels", n, s*s)
	}
}
