package inference

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
	ort "github.com/yalue/onnxruntime_go"
)

var (
	d1  = onnxgen.Fixed(1)
	d6  = onnxgen.Fixed(6)
	d80 = onnxgen.Fixed(80)
	d16 = onnxgen.Fixed(16)
	d96 = onnxgen.Fixed(96)
)

// wrongModels are small valid ONNX models that break the contract, with the
// error each must give.
func wrongModels() []struct {
	name, want string
	build      func(b *onnxgen.Builder)
} {
	refOf := func(b *onnxgen.Builder, face string) string {
		return b.Op("Slice", []string{face, b.Ints(3), b.Ints(6), b.Ints(1)})
	}
	return []struct {
		name, want string
		build      func(b *onnxgen.Builder)
	}{
		{"wrong face shape", `model input "x" has shape [1,3,96,96]; want mel [B,1,80,16] or face [B,6,S,S]`, func(b *onnxgen.Builder) {
			b.Input("mel", d1, d1, d80, d16)
			x := b.Input("x", d1, onnxgen.Fixed(3), d96, d96)
			b.OpTo("y", "Identity", []string{x})
			b.Output("y", d1, onnxgen.Fixed(3), d96, d96)
		}},
		{"missing mel", `model has 1 input ("face" [1,6,96,96]); want 2: mel [B,1,80,16] and face [B,6,S,S]`, func(b *onnxgen.Builder) {
			face := b.Input("face", d1, d6, d96, d96)
			b.OpTo("y", "Identity", []string{refOf(b, face)})
			b.Output("y", d1, onnxgen.Fixed(3), d96, d96)
		}},
		{"three inputs", `model has 3 inputs ("mel" [1,1,80,16], "face" [1,6,96,96], "bias" [1]); want 2`, func(b *onnxgen.Builder) {
			b.Input("mel", d1, d1, d80, d16)
			face := b.Input("face", d1, d6, d96, d96)
			bias := b.Input("bias", d1)
			b.OpTo("y", "Add", []string{refOf(b, face), bias})
			b.Output("y", d1, onnxgen.Fixed(3), d96, d96)
		}},
		{"two mels", `model inputs "a" [1,1,80,16] and "b" [1,1,80,16] both have the mel shape`, func(b *onnxgen.Builder) {
			x := b.Input("a", d1, d1, d80, d16)
			y := b.Input("b", d1, d1, d80, d16)
			b.OpTo("y", "Add", []string{x, y})
			b.Output("y", d1, d1, d80, d16)
		}},
		{"wrong output", `model has no float32 output [B,3,S,S] with S = 96; its outputs: "y" [1,1,96,96]`, func(b *onnxgen.Builder) {
			b.Input("mel", d1, d1, d80, d16)
			face := b.Input("face", d1, d6, d96, d96)
			b.OpTo("y", "ReduceMean", []string{face}, onnxgen.IntsAttr("axes", 1))
			b.Output("y", d1, d1, d96, d96)
		}},
		{"batch mismatch", `model inputs disagree on the batch size: mel "mel" [1,1,80,16], face "face" [2,6,96,96]`, func(b *onnxgen.Builder) {
			b.Input("mel", d1, d1, d80, d16)
			face := b.Input("face", onnxgen.Fixed(2), d6, d96, d96)
			b.OpTo("y", "Identity", []string{refOf(b, face)})
			b.Output("y", onnxgen.Fixed(2), onnxgen.Fixed(3), d96, d96)
		}},
	}
}

func TestWrongModelsFailClearly(t *testing.T) {
	rt := newRuntime(t)
	for _, tc := range wrongModels() {
		t.Run(tc.name, func(t *testing.T) {
			b := onnxgen.NewBuilder("wrong")
			tc.build(b)
			_, err := rt.LoadModelData("wrong.onnx", b.Model().Marshal())
			if err == nil {
				t.Fatal("loaded; want a contract error")
			}
			var ce *ContractError
			if !errors.As(err, &ce) {
				t.Fatalf("error %q is not a *ContractError", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "wrong.onnx") {
				t.Errorf("error %q\nwant it to name the model and contain %q", err, tc.want)
			}
		})
	}
}

// The matching rules, without ONNX Runtime.
func TestMatchContract(t *testing.T) {
	tensor := func(name string, dims ...int64) ort.InputOutputInfo {
		return ort.InputOutputInfo{Name: name, OrtValueType: ort.ONNXTypeTensor, DataType: ort.TensorElementDataTypeFloat, Dimensions: dims}
	}
	for _, tc := range []struct {
		name        string
		in, out     []ort.InputOutputInfo
		want        string // error substring, or "" for a match
		batch, size int64
	}{
		{"wav2lip export, names differ, face first", []ort.InputOutputInfo{tensor("face_sequences", -1, 6, 96, 96), tensor("audio_sequences", -1, 1, 80, 16)},
			[]ort.InputOutputInfo{tensor("output", -1, 3, 96, 96)}, "", -1, 96},
		{"fixed batch", []ort.InputOutputInfo{tensor("m", 4, 1, 80, 16), tensor("f", -1, 6, 128, 128)},
			[]ort.InputOutputInfo{tensor("o", -1, 3, 128, 128)}, "", 4, 128},
		{"S only on the output", []ort.InputOutputInfo{tensor("m", -1, 1, 80, 16), tensor("f", -1, 6, -1, -1)},
			[]ort.InputOutputInfo{tensor("aux", -1, 1), tensor("o", -1, 3, 256, 256)}, "", -1, 256},
		{"fully dynamic S", []ort.InputOutputInfo{tensor("m", -1, 1, 80, 16), tensor("f", -1, 6, -1, -1)},
			[]ort.InputOutputInfo{tensor("o", -1, 3, -1, -1)}, "", -1, -1},
		{"non-square face", []ort.InputOutputInfo{tensor("m", 1, 1, 80, 16), tensor("f", 1, 6, 96, 64)},
			nil, `model input "f" has shape [1,6,96,64]; want mel`, 0, 0},
		{"output size differs", []ort.InputOutputInfo{tensor("m", 1, 1, 80, 16), tensor("f", 1, 6, 96, 96)},
			[]ort.InputOutputInfo{tensor("o", 1, 3, 64, 64)}, `no float32 output [B,3,S,S] with S = 96; its outputs: "o" [1,3,64,64]`, 0, 0},
		{"int64 input", []ort.InputOutputInfo{{Name: "sr", OrtValueType: ort.ONNXTypeTensor, DataType: ort.TensorElementDataTypeInt64}, tensor("f", 1, 6, 96, 96)},
			nil, `model input "sr" holds int64; want float32`, 0, 0},
		{"two faces", []ort.InputOutputInfo{tensor("f1", 1, 6, 96, 96), tensor("f2", 1, 6, 96, 96)},
			nil, "both have the face shape", 0, 0},
		{"no inputs", nil, nil, "model has 0 inputs (none)", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := matchContract(tc.in, tc.out)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v; want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.batch != tc.batch || c.size != tc.size || c.mel.Shape[1] != 1 || c.face.Shape[1] != 6 || c.out.Shape[1] != 3 {
				t.Errorf("got %+v; want batch %d size %d", c, tc.batch, tc.size)
			}
		})
	}
}

// Garbage and truncated files fail with an error, not a crash.
func TestGarbageModelsFail(t *testing.T) {
	rt := newRuntime(t)
	good, err := onnxgen.DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), good...)
	for i := 0; i < 64; i++ {
		flipped[i*7] ^= 0xa5
	}
	cases := map[string][]byte{
		"text":          []byte("this is not an ONNX model\n"),
		"zeros":         make([]byte, 4096),
		"0xff":          []byte(strings.Repeat("\xff", 1000)),
		"truncated 10%": good[:len(good)/10],
		"truncated 90%": good[:len(good)*9/10],
		"header only":   good[:40],
		"flipped bytes": flipped,
		"empty message": {},
		"png":           []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
	}
	// Valid protobuf, invalid graphs.
	unknownOp := onnxgen.NewBuilder("bad")
	face := unknownOp.Input("face", d1, d6, d96, d96)
	unknownOp.Input("mel", d1, d1, d80, d16)
	unknownOp.OpTo("out", "NoSuchOperator", []string{face})
	unknownOp.Output("out", d1, onnxgen.Fixed(3), d96, d96)
	cases["unknown operator"] = unknownOp.Model().Marshal()
	dangling := onnxgen.NewBuilder("bad")
	dangling.Input("face", d1, d6, d96, d96)
	dangling.Input("mel", d1, d1, d80, d16)
	dangling.OpTo("out", "Identity", []string{"nowhere"})
	dangling.Output("out", d1, onnxgen.Fixed(3), d96, d96)
	cases["dangling input"] = dangling.Model().Marshal()

	for name, data := range cases {
		if _, err := rt.LoadModelData(name, data); err == nil {
			t.Errorf("%s: loaded; want an error", name)
		} else {
			t.Logf("%s: %v", name, firstLine(err.Error()))
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "truncated.onnx")
	if err := os.WriteFile(path, good[:len(good)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.LoadModel(path); err == nil {
		t.Error("truncated file loaded; want an error")
	}
	if _, err := rt.LoadModel(filepath.Join(dir, "missing.onnx")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v; want os.ErrNotExist", err)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// FuzzMatchContract: any input and output shapes give a match or a
// ContractError, never a panic, and a match satisfies the contract.
func FuzzMatchContract(f *testing.F) {
	f.Add([]byte{0xff, 1, 80, 16, 0xff, 6, 96, 96}, []byte{0xff, 3, 96, 96}, uint8(2))
	f.Add([]byte{1, 6, 0xff, 0xff, 1, 1, 80}, []byte{1, 3, 0xff}, uint8(3))
	f.Fuzz(func(t *testing.T, in, out []byte, split uint8) {
		// Bytes are dimensions (0xff: dynamic); split cuts them into
		// tensors of rank 4 (or what is left).
		toInfos := func(b []byte, prefix string) []ort.InputOutputInfo {
			var infos []ort.InputOutputInfo
			rank := 4
			if split%5 != 0 {
				rank = int(split % 5)
			}
			for len(b) > 0 && len(infos) < 4 {
				n := min(rank, len(b))
				dims := make([]int64, n)
				for i, v := range b[:n] {
					dims[i] = int64(v)
					if v == 0xff {
						dims[i] = Dynamic
					}
				}
				infos = append(infos, ort.InputOutputInfo{Name: prefix, OrtValueType: ort.ONNXTypeTensor,
					DataType: ort.TensorElementDataTypeFloat, Dimensions: dims})
				b = b[n:]
			}
			return infos
		}
		c, err := matchContract(toInfos(in, "in"), toInfos(out, "out"))
		if err != nil {
			var ce *ContractError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a ContractError", err)
			}
			return
		}
		if !isMel(c.mel.Shape) || !isFace(c.face.Shape) || len(c.out.Shape) != 4 || c.out.Shape[1] != OutChannels {
			t.Fatalf("matched %+v", c)
		}
		for _, s := range [][]int64{c.mel.Shape, c.face.Shape, c.out.Shape} {
			if !compatible(s[0], c.batch) {
				t.Fatalf("batch %d vs %v", c.batch, s)
			}
		}
		if !compatible(c.face.Shape[2], c.size) || !compatible(c.out.Shape[2], c.size) {
			t.Fatalf("size %d vs %v / %v", c.size, c.face.Shape, c.out.Shape)
		}
	})
}
