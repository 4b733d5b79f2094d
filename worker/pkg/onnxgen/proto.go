// Package onnxgen writes ONNX models from Go, without a generated copy of
// the ONNX protobuf schema: the messages are encoded field by field with
// google.golang.org/protobuf/encoding/protowire from the field numbers of
// onnx/onnx.proto. It holds the two generators README ("Media contract") asks
// for:
//
//   - DefaultModel: a small graph that honours the lip-sync contract and
//     opens the mouth and drops the jaw of the reference face with the
//     loudness of the voice bands of the mel window (see default.go);
//   - BenchmarkModel: Wav2Lip's layer shapes with fixed pseudo-random
//     weights, for measuring a realistic inference cost (see benchmark.go).
//
// Encoding is deterministic (fields in a fixed order, no maps), so a
// generator called twice gives the same bytes. Across CPU architectures the
// default model's float fields may differ in their last bits (Go may fuse
// multiply-adds on arm64); the benchmark model's weights use only exact
// operations.
package onnxgen

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Versions written into every model. IR version 8 and opset 17 are read by
// every ONNX Runtime since 1.13; GridSample needs opset 16 or later (its
// "bilinear" mode was renamed "linear" in opset 20, so the opset is pinned).
const (
	IRVersion = 8
	Opset     = 17
	Producer  = "avatarfleet-onnxgen"
)

// DataType is TensorProto.DataType.
type DataType int32

// The element types this package writes.
const (
	Float DataType = 1
	Int64 DataType = 7
)

// AttrType is AttributeProto.AttributeType.
type AttrType int32

// The attribute types this package writes.
const (
	AttrFloat  AttrType = 1
	AttrInt    AttrType = 2
	AttrString AttrType = 3
	AttrTensor AttrType = 4
	AttrFloats AttrType = 6
	AttrInts   AttrType = 7
)

// Model is ModelProto, with a single default-domain opset import.
type Model struct {
	IRVersion int64
	Opset     int64
	Producer  string
	Graph     Graph
	Metadata  []Metadata // metadata_props (see metadata.go)
}

// Graph is GraphProto.
type Graph struct {
	Name         string
	Nodes        []Node
	Initializers []Tensor
	Inputs       []ValueInfo
	Outputs      []ValueInfo
}

// Node is NodeProto (default domain).
type Node struct {
	Name    string
	OpType  string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
}

// Attr is AttributeProto; the field Type selects which value is written.
type Attr struct {
	Name   string
	Type   AttrType
	F      float32
	I      int64
	S      string
	T      *Tensor
	Floats []float32
	Ints   []int64
}

// Tensor is TensorProto. Float tensors store Floats, int64 tensors Int64s;
// both are written as little-endian raw_data.
type Tensor struct {
	Name     string
	Dims     []int64
	DataType DataType
	Floats   []float32
	Int64s   []int64
}

// ValueInfo is a graph input or output: ValueInfoProto with a tensor type.
type ValueInfo struct {
	Name     string
	ElemType DataType
	Dims     []Dim
}

// Dim is TensorShapeProto.Dimension: a fixed size, or a named dynamic one
// when Param is set.
type Dim struct {
	Value int64
	Param string
}

// Field numbers of onnx/onnx.proto.
const (
	modelIRVersion   = 1
	modelProducer    = 2
	modelGraph       = 7
	modelOpsetImport = 8

	opsetDomain  = 1
	opsetVersion = 2

	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphInput       = 11
	graphOutput      = 12

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5

	attrName   = 1
	attrF      = 2
	attrI      = 3
	attrS      = 4
	attrT      = 5
	attrFloats = 7
	attrInts   = 8
	attrType   = 20

	tensorDims     = 1
	tensorDataType = 2
	tensorName     = 8
	tensorRawData  = 9

	valueInfoName = 1
	valueInfoType = 2

	typeTensorType = 1
	tensorElemType = 1
	tensorShape    = 2
	shapeDim       = 1
	dimValue       = 1
	dimParam       = 2
)

// Marshal encodes the model as an ONNX ModelProto. Protobuf readers accept
// fields in any order; the graph is written last so that its (possibly
// hundreds of megabytes of) initializers are copied once, straight into the
// result.
func (m *Model) Marshal() []byte {
	// The graph's small fields first, then the size of its initializers,
	// so the graph's length prefix is known before they are written.
	small := m.Graph.marshalSmall(nil)
	graphLen := len(small)
	for i := range m.Graph.Initializers {
		graphLen += protowire.SizeTag(graphInitializer) + protowire.SizeBytes(m.Graph.Initializers[i].size())
	}
	b := make([]byte, 0, graphLen+256)
	b = appendVarintField(b, modelIRVersion, uint64(m.IRVersion))
	b = appendStringField(b, modelProducer, m.Producer)
	var op []byte
	op = appendStringField(op, opsetDomain, "")
	op = appendVarintField(op, opsetVersion, uint64(m.Opset))
	b = appendMessage(b, modelOpsetImport, op)
	for _, md := range m.Metadata {
		b = appendMetadata(b, md)
	}
	b = protowire.AppendTag(b, modelGraph, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(graphLen))
	b = append(b, small...)
	for i := range m.Graph.Initializers {
		t := &m.Graph.Initializers[i]
		b = protowire.AppendTag(b, graphInitializer, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(t.size()))
		b = t.marshal(b)
	}
	return b
}

// marshalSmall writes every graph field but the initializers.
func (g *Graph) marshalSmall(b []byte) []byte {
	for i := range g.Nodes {
		b = appendMessage(b, graphNode, g.Nodes[i].marshal(nil))
	}
	b = appendStringField(b, graphName, g.Name)
	for i := range g.Inputs {
		b = appendMessage(b, graphInput, g.Inputs[i].marshal(nil))
	}
	for i := range g.Outputs {
		b = appendMessage(b, graphOutput, g.Outputs[i].marshal(nil))
	}
	return b
}

func (n *Node) marshal(b []byte) []byte {
	for _, s := range n.Inputs {
		b = appendStringField(b, nodeInput, s)
	}
	for _, s := range n.Outputs {
		b = appendStringField(b, nodeOutput, s)
	}
	b = appendStringField(b, nodeName, n.Name)
	b = appendStringField(b, nodeOpType, n.OpType)
	for i := range n.Attrs {
		b = appendMessage(b, nodeAttribute, n.Attrs[i].marshal(nil))
	}
	return b
}

func (a *Attr) marshal(b []byte) []byte {
	b = appendStringField(b, attrName, a.Name)
	switch a.Type {
	case AttrFloat:
		b = protowire.AppendTag(b, attrF, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(a.F))
	case AttrInt:
		b = appendVarintField(b, attrI, uint64(a.I))
	case AttrString:
		b = appendStringField(b, attrS, a.S)
	case AttrTensor:
		b = appendMessage(b, attrT, a.T.marshal(nil))
	case AttrFloats:
		// Written unpacked: proto2 "repeated float" without [packed=true].
		for _, f := range a.Floats {
			b = protowire.AppendTag(b, attrFloats, protowire.Fixed32Type)
			b = protowire.AppendFixed32(b, math.Float32bits(f))
		}
	case AttrInts:
		for _, v := range a.Ints {
			b = appendVarintField(b, attrInts, uint64(v))
		}
	}
	return appendVarintField(b, attrType, uint64(a.Type))
}

// header writes the tensor's fields but raw_data.
func (t *Tensor) header(b []byte) []byte {
	for _, d := range t.Dims {
		b = appendVarintField(b, tensorDims, uint64(d))
	}
	b = appendVarintField(b, tensorDataType, uint64(t.DataType))
	return appendStringField(b, tensorName, t.Name)
}

func (t *Tensor) rawLen() int {
	if t.DataType == Int64 {
		return 8 * len(t.Int64s)
	}
	return 4 * len(t.Floats)
}

// size is the length of the encoded TensorProto.
func (t *Tensor) size() int {
	return len(t.header(nil)) + protowire.SizeTag(tensorRawData) + protowire.SizeBytes(t.rawLen())
}

func (t *Tensor) marshal(b []byte) []byte {
	b = t.header(b)
	b = protowire.AppendTag(b, tensorRawData, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(t.rawLen()))
	if t.DataType == Int64 {
		for _, v := range t.Int64s {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
		return b
	}
	for _, f := range t.Floats {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

func (v *ValueInfo) marshal(b []byte) []byte {
	b = appendStringField(b, valueInfoName, v.Name)
	var shape []byte
	for _, d := range v.Dims {
		var dim []byte
		if d.Param != "" {
			dim = appendStringField(dim, dimParam, d.Param)
		} else {
			dim = appendVarintField(dim, dimValue, uint64(d.Value))
		}
		shape = appendMessage(shape, shapeDim, dim)
	}
	var tt []byte
	tt = appendVarintField(tt, tensorElemType, uint64(v.ElemType))
	tt = appendMessage(tt, tensorShape, shape)
	var typ []byte
	typ = appendMessage(typ, typeTensorType, tt)
	return appendMessage(b, valueInfoType, typ)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// appendMessage writes an embedded message (always, even when empty: an
// empty shape or an empty dimension list still means something in ONNX).
func appendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	return appendBytesField(b, num, msg)
}
