package onnxgen

import "strconv"

// Builder assembles a graph node by node. Value names are generated
// ("v0", "v1", …) unless given; every method returns the name of the value
// it defines so calls compose.
type Builder struct {
	g    Graph
	next int
	meta []Metadata
}

// NewBuilder starts a graph with the given name.
func NewBuilder(name string) *Builder {
	return &Builder{g: Graph{Name: name}}
}

// Fixed is a dimension of known size.
func Fixed(n int64) Dim { return Dim{Value: n} }

// Dynamic is a named dimension whose size is chosen at run time.
func Dynamic(name string) Dim { return Dim{Param: name} }

// Input declares a float32 graph input and returns its name.
func (b *Builder) Input(name string, dims ...Dim) string {
	b.g.Inputs = append(b.g.Inputs, ValueInfo{Name: name, ElemType: Float, Dims: dims})
	return name
}

// Output declares value as a float32 graph output.
func (b *Builder) Output(value string, dims ...Dim) {
	b.g.Outputs = append(b.g.Outputs, ValueInfo{Name: value, ElemType: Float, Dims: dims})
}

// Const adds a float32 initializer of the given shape and returns its name.
func (b *Builder) Const(dims []int64, data []float32) string {
	name := b.fresh("c")
	b.g.Initializers = append(b.g.Initializers, Tensor{Name: name, Dims: dims, DataType: Float, Floats: data})
	return name
}

// Scalar adds a float32 scalar (rank 0) initializer.
func (b *Builder) Scalar(v float32) string {
	return b.Const(nil, []float32{v})
}

// Ints adds a one-dimensional int64 initializer (Slice bounds and the like).
func (b *Builder) Ints(v ...int64) string {
	name := b.fresh("c")
	b.g.Initializers = append(b.g.Initializers, Tensor{Name: name, Dims: []int64{int64(len(v))}, DataType: Int64, Int64s: v})
	return name
}

// Op adds a node with one output and returns the output's name.
func (b *Builder) Op(opType string, inputs []string, attrs ...Attr) string {
	out := b.fresh("v")
	b.OpTo(out, opType, inputs, attrs...)
	return out
}

// OpTo adds a node with one output of the given name (a graph output,
// usually).
func (b *Builder) OpTo(out, opType string, inputs []string, attrs ...Attr) {
	b.g.Nodes = append(b.g.Nodes, Node{
		Name:    opType + "_" + strconv.Itoa(len(b.g.Nodes)),
		OpType:  opType,
		Inputs:  inputs,
		Outputs: []string{out},
		Attrs:   attrs,
	})
}

// Model wraps the graph into a model with this package's versions.
func (b *Builder) Model() *Model {
	return &Model{IRVersion: IRVersion, Opset: Opset, Producer: Producer, Graph: b.g, Metadata: b.meta}
}

func (b *Builder) fresh(prefix string) string {
	name := prefix + strconv.Itoa(b.next)
	b.next++
	return name
}

// IntAttr is an INT attribute.
func IntAttr(name string, v int64) Attr { return Attr{Name: name, Type: AttrInt, I: v} }

// IntsAttr is an INTS attribute.
func IntsAttr(name string, v ...int64) Attr { return Attr{Name: name, Type: AttrInts, Ints: v} }

// FloatAttr is a FLOAT attribute.
func FloatAttr(name string, v float32) Attr { return Attr{Name: name, Type: AttrFloat, F: v} }

// StringAttr is a STRING attribute.
func StringAttr(name, v string) Attr { return Attr{Name: name, Type: AttrString, S: v} }
