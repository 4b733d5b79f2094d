package onnxgen

import (
	"fmt"
	"math"
)

// DefaultSize is the face crop size S of DefaultModel: the worker crops the
// face box (Wav2Lip style: the detector's box with the chin inside) and
// resizes it to S×S before inference, then resizes the output back.
const DefaultSize = 96

// Input and output names of the generated models. Runtimes match inputs by
// shape (README, "Media contract"), so the names are only for people reading the graph.
const (
	MelInput   = "mel"
	FaceInput  = "face"
	FaceOutput = "out"
)

// DefaultModel returns the default lip-sync model at DefaultSize.
func DefaultModel() ([]byte, error) {
	return DefaultModelOfSize(DefaultSize)
}

// DefaultModelOfSize returns the default lip-sync model for S×S face crops.
//
// Contract (README, "Media contract"): inputs mel [B,1,80,16] and face [B,6,S,S]
// (channels 0..2 the masked target, ignored here; 3..5 the reference, 0..1),
// output [B,3,S,S] in 0..1; B is dynamic, S fixed.
//
// What it computes, in eleven cheap operators:
//
//  1. Loudness of the voice: a weighted mean e of the mel values over the
//     bands 2..55 (about 150 Hz to 3 kHz: the fundamental and the first
//     formants) and over the window's frames, weighted by a Gaussian around
//     frame 3 (σ 2.5 frames) so the mouth follows the audio at the start of
//     the window, which is the video frame's own time. One Conv.
//  2. Mouth-open amount a = sigmoid(2.4·(e + 1.4)). Silence (mel −4
//     everywhere) gives a ≈ 0.002; vowels of espeak-ng speech at its
//     default level (e ≈ −0.5) about 0.9; consonants (e ≈ −2) about 0.2.
//  3. A GridSample warp of the reference by base grid + a·D, where D is a
//     precomputed displacement field (see mouthField): below the lip line
//     the lower lip and the jaw move down (up to 7.5 % of S, fading to zero
//     at the bottom edge, so the crop pastes back without a seam), the
//     upper lip rises a little, and the lip line in between is stretched
//     into the opening; the mouth corners draw in slightly. Nothing above
//     the upper lip or outside the jaw moves.
//  4. The opening is blended toward a dark red mouth interior by a·M, M
//     the part of each pixel inside the opening at a = 1, times 0.9 (the
//     stretched lip line shows through a little, as teeth and tongue would).
//  5. Clip to 0..1.
//
// With silence the output is the reference (to within 1e-2); speech opens
// the mouth in proportion to its loudness. The reference's own mouth is
// only moved, never replaced: a reference with an open mouth stays open. Geometry constants assume the
// Wav2Lip crop: the lip line at about 0.74·S, the mouth centred, about
// 0.42·S wide.
func DefaultModelOfSize(size int) ([]byte, error) {
	if size < 16 || size > 1024 {
		return nil, fmt.Errorf("onnxgen: default model size %d out of range 16..1024", size)
	}
	s := int64(size)
	b := NewBuilder("avatarfleet_default_lipsync")
	batch := Dynamic("B")
	mel := b.Input(MelInput, batch, Fixed(1), Fixed(MelBands), Fixed(MelFrames))
	face := b.Input(FaceInput, batch, Fixed(6), Fixed(s), Fixed(s))

	ref := b.Op("Slice", []string{face, b.Ints(3), b.Ints(6), b.Ints(1)})
	w, bias := loudnessWeights()
	z := b.Op("Conv", []string{mel, b.Const([]int64{1, 1, MelBands, MelFrames}, w), b.Const([]int64{1}, []float32{bias})})
	a := b.Op("Sigmoid", []string{z})

	base, disp, mask := mouthField(size)
	grid := b.Op("Add", []string{b.Op("Mul", []string{a, b.Const([]int64{1, s, s, 2}, disp)}), b.Const([]int64{1, s, s, 2}, base)})
	warped := b.Op("GridSample", []string{ref, grid},
		StringAttr("mode", "bilinear"), StringAttr("padding_mode", "border"), IntAttr("align_corners", 0))
	// warped + a·M·(interior − warped): the opening fades to the interior.
	am := b.Op("Mul", []string{a, b.Const([]int64{1, 1, s, s}, mask)})
	toward := b.Op("Sub", []string{b.Const([]int64{1, 3, 1, 1}, mouthInterior()), warped})
	shaded := b.Op("Add", []string{warped, b.Op("Mul", []string{am, toward})})
	b.OpTo(FaceOutput, "Clip", []string{shaded, b.Scalar(0), b.Scalar(1)})
	b.Output(FaceOutput, batch, Fixed(3), Fixed(s), Fixed(s))
	return b.Model().Marshal(), nil
}

// Mel window shape of the contract: [B,1,MelBands,MelFrames].
const (
	MelBands  = 80
	MelFrames = 16
)

// Loudness detector (step 1 and 2 of DefaultModelOfSize).
const (
	voiceBandLo  = 2  // first mel band of the voice range (≈150 Hz)
	voiceBandHi  = 55 // last (≈3 kHz)
	frameCentre  = 3.0
	frameSigma   = 2.5
	openGain     = 2.4
	openMidpoint = -1.4 // e at which a = 0.5
)

// loudnessWeights is the Conv kernel [1,1,80,16] and bias that give
// openGain·(e − openMidpoint), e the weighted mean of the voice bands.
func loudnessWeights() ([]float32, float32) {
	var frame [MelFrames]float64
	var sum float64
	for t := range frame {
		d := (float64(t) - frameCentre) / frameSigma
		frame[t] = math.Exp(-0.5 * d * d)
		sum += frame[t]
	}
	bands := float64(voiceBandHi - voiceBandLo + 1)
	w := make([]float32, MelBands*MelFrames)
	for band := voiceBandLo; band <= voiceBandHi; band++ {
		for t := range frame {
			w[band*MelFrames+t] = float32(openGain * frame[t] / (sum * bands))
		}
	}
	return w, float32(-openGain * openMidpoint)
}
