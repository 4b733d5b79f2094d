package inference

import (
	"fmt"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// Contract dimensions (README, "Media contract").
const (
	MelBands     = 80
	MelFrames    = 16
	FaceChannels = 6 // masked target (0..2) and reference (3..5)
	OutChannels  = 3
)

// Dynamic marks a dimension chosen at run time, as ONNX Runtime reports it.
const Dynamic = -1

// TensorInfo names one of a model's inputs or outputs and its shape;
// dynamic dimensions are Dynamic.
type TensorInfo struct {
	Name  string
	Shape []int64
}

func (t TensorInfo) String() string {
	return strconv.Quote(t.Name) + " " + shapeString(t.Shape)
}

// ContractError reports a model that does not honour the contract.
type ContractError struct {
	Msg string
}

func (e *ContractError) Error() string { return "inference: " + e.Msg }

func contractErr(format string, args ...any) error {
	return &ContractError{Msg: fmt.Sprintf(format, args...)}
}

// contract is what matching a model's inputs and output found.
type contract struct {
	mel, face, out TensorInfo
	batch          int64 // fixed batch, or Dynamic
	size           int64 // fixed S, or Dynamic
}

const (
	wantMel  = "mel [B,1,80,16]"
	wantFace = "face [B,6,S,S]"
	wantOut  = "[B,3,S,S]"
)

// matchContract finds the mel and face inputs by shape and the output
// [B,3,S,S], and checks that B and S agree between them.
func matchContract(inputs, outputs []ort.InputOutputInfo) (contract, error) {
	var c contract
	for i := range inputs {
		if err := checkFloatTensor("input", &inputs[i]); err != nil {
			return c, err
		}
	}
	if len(inputs) != 2 {
		return c, contractErr("model has %s (%s); want 2: %s and %s", plural(len(inputs), "input"), listInfos(inputs), wantMel, wantFace)
	}
	var mels, faces []TensorInfo
	for i := range inputs {
		info := TensorInfo{Name: inputs[i].Name, Shape: []int64(inputs[i].Dimensions)}
		switch {
		case isMel(info.Shape):
			mels = append(mels, info)
		case isFace(info.Shape):
			faces = append(faces, info)
		default:
			return c, contractErr("model input %s has shape %s; want %s or %s", strconv.Quote(info.Name), shapeString(info.Shape), wantMel, wantFace)
		}
	}
	switch {
	case len(mels) == 2:
		return c, contractErr("model inputs %s and %s both have the mel shape; want one %s and one %s", mels[0], mels[1], wantMel, wantFace)
	case len(faces) == 2:
		return c, contractErr("model inputs %s and %s both have the face shape; want one %s and one %s", faces[0], faces[1], wantMel, wantFace)
	}
	c.mel, c.face = mels[0], faces[0]

	c.batch = c.mel.Shape[0]
	if b := c.face.Shape[0]; b != Dynamic && c.batch != Dynamic && b != c.batch {
		return c, contractErr("model inputs disagree on the batch size: mel %s, face %s", c.mel, c.face)
	} else if c.batch == Dynamic {
		c.batch = b
	}
	c.size = c.face.Shape[2]
	if c.size == Dynamic {
		c.size = c.face.Shape[3]
	}

	for i := range outputs {
		out := &outputs[i]
		if out.OrtValueType != ort.ONNXTypeTensor || out.DataType != ort.TensorElementDataTypeFloat {
			continue
		}
		s := []int64(out.Dimensions)
		if len(s) != 4 || s[1] != OutChannels || !compatible(s[0], c.batch) || !compatible(s[2], s[3]) ||
			!compatible(s[2], c.size) || !compatible(s[3], c.size) {
			continue
		}
		c.out = TensorInfo{Name: out.Name, Shape: s}
		if c.batch == Dynamic {
			c.batch = s[0]
		}
		if c.size == Dynamic {
			c.size = max(s[2], s[3]) // Dynamic is −1: picks a fixed one if any
		}
		return c, nil
	}
	want := wantOut
	if c.size != Dynamic {
		want += fmt.Sprintf(" with S = %d", c.size)
	}
	return c, contractErr("model has no float32 output %s; its outputs: %s", want, listInfos(outputs))
}

func checkFloatTensor(kind string, v *ort.InputOutputInfo) error {
	if v.OrtValueType != ort.ONNXTypeTensor {
		return contractErr("model %s %s is a %s; want a float32 tensor", kind, strconv.Quote(v.Name), v.OrtValueType)
	}
	if v.DataType != ort.TensorElementDataTypeFloat {
		return contractErr("model %s %s holds %s; want float32", kind, strconv.Quote(v.Name), elemTypeName(v.DataType))
	}
	return nil
}

// elemTypeName is "int64" for ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64.
func elemTypeName(t ort.TensorElementDataType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "ONNX_TENSOR_ELEMENT_DATA_TYPE_"))
}

// isMel: [B,1,80,16], the bands and frames possibly dynamic.
func isMel(s []int64) bool {
	return len(s) == 4 && s[1] == 1 && compatible(s[2], MelBands) && compatible(s[3], MelFrames)
}

// isFace: [B,6,S,S], S possibly dynamic.
func isFace(s []int64) bool {
	return len(s) == 4 && s[1] == FaceChannels && compatible(s[2], s[3])
}

// compatible reports whether two dimensions can be equal: either is
// dynamic or both are the same.
func compatible(a, b int64) bool {
	return a == Dynamic || b == Dynamic || a == b
}

// shapeString writes [1,6,96,96], dynamic dimensions as "?".
func shapeString(s []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		if d < 0 {
			b.WriteByte('?')
		} else {
			b.WriteString(strconv.FormatInt(d, 10))
		}
	}
	b.WriteByte(']')
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func listInfos(vs []ort.InputOutputInfo) string {
	if len(vs) == 0 {
		return "none"
	}
	parts := make([]string, len(vs))
	for i := range vs {
		parts[i] = TensorInfo{Name: vs[i].Name, Shape: []int64(vs[i].Dimensions)}.String()
	}
	return strings.Join(parts, ", ")
}
