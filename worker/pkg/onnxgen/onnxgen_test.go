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
	want := []string{"Slice", "Conv", "Sigmoid", "Mul", "Add", "GridSample", "Mul", "Sub", "Mul", "Add", "Clip"}
	if !slices.Equal(ops, want) {
		t.Errorf("ops %v; want %v", ops, want)
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

func TestLoudnessWeights(t *testing.T) {
	w, bias := loudnessWeights()
	a := func(level float64) float64 {
		z := float64(bias)
		for _, v := range w {
			z += float64(v) * level
		}
		return 1 / (1 + math.Exp(-z))
	}
	if s := a(-4); s > 0.003 {
		t.Errorf("silence opens the mouth by %.4f; want ≈ 0", s)
	}
	if m := a(openMidpoint); math.Abs(m-0.5) > 1e-3 {
		t.Errorf("midpoint gives %.4f; want 0.5", m)
	}
	if l := a(0); l < 0.95 {
		t.Errorf("a loud voice opens the mouth by %.3f; want nearly fully", l)
	}
	for b := range MelBands {
		if (b < voiceBandLo || b > voiceBandHi) && w[b*MelFrames] != 0 {
			t.Errorf("band %d outside the voice range has weight %v", b, w[b*MelFrames])
		}
	}
}

func TestMouthField(t *testing.T) {
	const s = DefaultSize
	base, disp, mask := mouthField(s)
	at := func(f []float32, x, y, c int) float64 { return float64(f[(y*s+x)*2+c]) }
	for y := range s {
		for x := range s {
			for c := range 2 {
				d := at(disp, x, y, c) * s / 2 // in pixels
				// Only the lower face moves; the crop's edges stay put.
				if (y < s/2 || x == 0 || x == s-1 || y == s-1) && math.Abs(d) > 0.05 {
					t.Fatalf("pixel (%d,%d) moves by %.3f px (axis %d); want 0", x, y, d, c)
				}
				if math.Abs(d) > 0.1*s {
					t.Fatalf("pixel (%d,%d) moves by %.1f px", x, y, d)
				}
			}
			if m := mask[y*s+x]; m < 0 || m > openDarkness || (m > 0 && math.Abs(float64(y)-lipY*s) > 10) {
				t.Fatalf("mask(%d,%d) = %v", x, y, m)
			}
		}
	}
	// Each column's sampling position is non-decreasing at full opening
	// (no folds), and the middle column opens: rows sample the lip line.
	for x := range s {
		prev := math.Inf(-1)
		for y := range s {
			sy := at(base, x, y, 1) + at(disp, x, y, 1)
			if sy < prev-1e-6 {
				t.Fatalf("column %d folds at row %d", x, y)
			}
			prev = sy
		}
	}
	lip := lipY*2 - 1
	var open int
	for y := range s {
		if math.Abs(at(base, s/2, y, 1)+at(disp, s/2, y, 1)-lip) < 1e-6 {
			open++
		}
	}
	if want := int(math.Round((jawDrop + lipLift) * s)); open < want-1 {
		t.Errorf("centre column: %d rows inside the opening; want about %d", open, want)
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
