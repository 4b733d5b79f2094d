// Package lipsynctest holds a test double of lipsync.Model for the tests of
// the packages that take one (pipeline, mediaruntime): FakeModel renders
// without ONNX Runtime, counts its runs, and fails on demand.
package lipsynctest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
)

// FakeModel is a test double of lipsync.Model: Run checks the batch against
// its Shape and writes Value into every output, or returns Err (when set)
// once Fail has been called. Its methods are safe for concurrent use.
type FakeModel struct {
	// S is the Shape it reports; the zero value is 96×96, batch 1, the
	// contract's look-ahead.
	S lipsync.Shape
	// Value is what Run writes into every output value.
	Value float32

	mu     sync.Mutex
	runs   int
	frames int
	fail   error
	closed bool
}

var _ lipsync.Model = (*FakeModel)(nil)

// Shape implements lipsync.Model.
func (f *FakeModel) Shape() lipsync.Shape {
	if f.S == (lipsync.Shape{}) {
		return lipsync.Shape{FaceSize: 96, MaxBatch: 1, LookAhead: lipsync.WindowLookAhead}
	}
	return f.S
}

// Run implements lipsync.Model.
func (f *FakeModel) Run(ctx context.Context, batch []lipsync.Frame) error {
	if err := lipsync.Check(f.Shape(), batch); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fake model: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return errors.New("fake model: run after Close")
	case f.fail != nil:
		return f.fail
	}
	f.runs++
	f.frames += len(batch)
	for i := range batch {
		for j := range batch[i].Out {
			batch[i].Out[j] = f.Value
		}
	}
	return nil
}

// Fail makes every later Run return err.
func (f *FakeModel) Fail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

// Runs is the number of successful Runs and the frames they rendered.
func (f *FakeModel) Runs() (runs, frames int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs, f.frames
}

// Closed reports whether Close was called.
func (f *FakeModel) Closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Close implements lipsync.Model.
func (f *FakeModel) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}
