package lipsync

import (
	"context"
	"fmt"
	"sync"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

// ONNX is the ONNX Runtime implementation of Model: one inference.Context
// (one ONNX Runtime session, its tensors allocated once) of batch B.
type ONNX struct {
	c     *inference.Context
	shape Shape
	// mel, face and out are batch-sized scratch for Runs of more than one
	// frame; a Run of one frame hands the frame's own slices to the
	// Context, which copies them into its tensors (no extra copy).
	mu             sync.Mutex // guards the scratch
	mel, face, out []float32
}

var _ Model = (*ONNX)(nil)

// NewONNX opens a context of m with opts and wraps it.
func NewONNX(m *inference.Model, opts inference.ContextOptions) (*ONNX, error) {
	c, err := m.NewContext(opts)
	if err != nil {
		return nil, fmt.Errorf("lipsync: %w", err)
	}
	return WrapContext(c), nil
}

// WrapContext makes c a Model; the ONNX owns c from then on (Close closes
// it).
func WrapContext(c *inference.Context) *ONNX {
	o := &ONNX{c: c, shape: Shape{FaceSize: c.Size(), MaxBatch: c.Batch(), LookAhead: c.LookAhead(),
		PasteChange: c.Paste() == inference.PasteChange}}
	if b := c.Batch(); b > 1 {
		o.mel, o.face, o.out = make([]float32, c.MelLen()), make([]float32, c.FaceLen()), make([]float32, c.OutLen())
	}
	return o
}

// Context is the wrapped inference context.
func (o *ONNX) Context() *inference.Context { return o.c }

// Shape implements Model.
func (o *ONNX) Shape() Shape { return o.shape }

// Run implements Model. The Context's batch is fixed: fewer frames than
// MaxBatch are padded with zeros (their outputs dropped), so a partial
// batch costs as much as a full one.
func (o *ONNX) Run(ctx context.Context, batch []Frame) error {
	if err := Check(o.shape, batch); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lipsync: run: %w", err)
	}
	if o.shape.MaxBatch == 1 {
		f := &batch[0]
		return o.c.Run(f.Mel, f.Face, f.Out)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	fl, ol := o.shape.FaceLen(), o.shape.OutLen()
	for i := range batch {
		copy(o.mel[i*MelLen:], batch[i].Mel)
		copy(o.face[i*fl:], batch[i].Face)
	}
	clear(o.mel[len(batch)*MelLen:])
	clear(o.face[len(batch)*fl:])
	if err := o.c.Run(o.mel, o.face, o.out); err != nil {
		return err
	}
	for i := range batch {
		copy(batch[i].Out, o.out[i*ol:(i+1)*ol])
	}
	return nil
}

// Close implements Model.
func (o *ONNX) Close() error { return o.c.Close() }
