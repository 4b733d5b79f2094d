// Package lipsync is the media pipeline's view of a lip-sync model: what it
// takes (a mel window and a face crop per frame), how far ahead of a frame
// it needs audio, and a Run over a batch of frames. The pipeline and the
// media runtime's prewarm pools hold a Model and nothing more concrete, so
// the ONNX Runtime context (NewONNX), a cross-session batching executor
// (package lipsync/batch), a later TensorRT or MuseTalk-family model, and
// tests' test doubles all plug in at that one place.
//
// Adding a model: implement Model (Shape, Run, Close) and hand the media
// runtime a constructor for it (mediaruntime.Config.OpenModel).
package lipsync

import (
	"context"
	"fmt"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/melspec"
)

// Contract dimensions (README, "Media contract"): a frame's input is a mel
// window [1,80,16] and a face stack [6,S,S] (masked target, then reference;
// 0..1), its output a face [3,S,S].
const (
	MelBands     = melspec.Bands
	MelFrames    = melspec.WindowFrames
	MelLen       = MelBands * MelFrames
	FaceChannels = 6
	OutChannels  = 3
)

// WindowLookAhead is the look-ahead of a model that declares none: the
// Wav2Lip window, 16 mel frames (200 ms) from the frame's own time on
// (inference.MaxLookAhead; README, "Latency contract").
const WindowLookAhead = inference.MaxLookAhead

// MaxLookAhead is the most a model's look-ahead may be: its whole window.
const MaxLookAhead = inference.MaxLookAhead

// Shape says what a Model takes and gives.
type Shape struct {
	// FaceSize is S: the face crops' width and height.
	FaceSize int
	// MaxBatch is the most frames one Run takes (at least 1).
	MaxBatch int
	// LookAhead is how far past a video frame's own time the model's mel
	// window reaches (0..MaxLookAhead): the pipeline gives frame v at
	// t = v·40 ms the 16 mel frames whose window ends at t+LookAhead
	// (melspec.WindowStartAt), and delays both tracks by enough ticks for
	// that audio to have arrived. WindowLookAhead (200 ms) for a
	// Wav2Lip-window model; a model declares its own in its ONNX metadata
	// (inference.LookAheadKey).
	LookAhead time.Duration
	// PasteChange: the model changes only part of the face (the generated
	// default moves the mouth and jaw), so the pipeline blends in only its
	// change to the reference and the rest of the frame stays pixel for
	// pixel; otherwise its output replaces the face box (Wav2Lip). A model
	// declares it in its ONNX metadata (inference.PasteKey).
	PasteChange bool
}

// Validate checks the shape: a batch and a face size of at least 1, and a
// look-ahead of 0..MaxLookAhead.
func (s Shape) Validate() error {
	if s.MaxBatch < 1 || s.FaceSize < 1 || s.LookAhead < 0 || s.LookAhead > MaxLookAhead {
		return fmt.Errorf("lipsync: model shape %+v: want a batch and a face size of at least 1, and a look-ahead of 0..%v",
			s, MaxLookAhead)
	}
	return nil
}

// FaceLen is the length of one frame's face stack: 6·S·S.
func (s Shape) FaceLen() int { return FaceChannels * s.FaceSize * s.FaceSize }

// OutLen is the length of one frame's output face: 3·S·S.
func (s Shape) OutLen() int { return OutChannels * s.FaceSize * s.FaceSize }

// Frame is one frame of a batch: the inputs, row-major, and the buffer the
// output face is written to. Run reads Mel and Face and writes Out; the
// caller keeps all three.
type Frame struct {
	Mel  []float32 // MelLen values: the mel window [1,80,16]
	Face []float32 // Shape.FaceLen values: [6,S,S]
	Out  []float32 // Shape.OutLen values: [3,S,S], written by Run
}

// Model renders lip-synced faces. Run and Close may be called from
// different goroutines; a Model serialises its Runs.
type Model interface {
	// Shape is fixed for the Model's life.
	Shape() Shape
	// Run renders 1..MaxBatch frames. It returns early with an error
	// wrapping ctx.Err() when ctx ends before the frames were rendered;
	// on any error the frames' Out is undefined.
	Run(ctx context.Context, batch []Frame) error
	// Close releases the model's resources; it waits for a Run in
	// progress and is idempotent.
	Close() error
}

// Check reports whether batch fits s: 1..MaxBatch frames whose slices have
// the lengths the shape wants. Implementations call it before running.
func Check(s Shape, batch []Frame) error {
	if len(batch) == 0 || len(batch) > s.MaxBatch {
		return fmt.Errorf("lipsync: batch of %d frames; want 1..%d", len(batch), s.MaxBatch)
	}
	for i := range batch {
		if err := CheckFrame(s, &batch[i]); err != nil {
			return fmt.Errorf("lipsync: frame %d of %d: %w", i, len(batch), err)
		}
	}
	return nil
}

// CheckFrame reports whether f's slices have the lengths s wants.
func CheckFrame(s Shape, f *Frame) error {
	if len(f.Mel) != MelLen || len(f.Face) != s.FaceLen() || len(f.Out) != s.OutLen() {
		return fmt.Errorf("%d/%d/%d mel/face/out values; want %d/%d/%d (S=%d)",
			len(f.Mel), len(f.Face), len(f.Out), MelLen, s.FaceLen(), s.OutLen(), s.FaceSize)
	}
	return nil
}
