package onnxgen

import (
	"fmt"
	"math"
	"strconv"
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

// Metadata keys the generated models write (README, "Latency contract").
const (
	// MetaLookAhead is the audio look-ahead in milliseconds: the mel window
	// of the frame at time t ends at t + look-ahead.
	MetaLookAhead = "avatarfleet.lookahead_ms"
	// MetaPaste is how the output goes back into the frame: "change" (only
	// the model's change to the reference is added, so what the model
	// leaves alone stays pixel for pixel) or, when absent, "replace"
	// (Wav2Lip: the crop replaces the face box).
	MetaPaste = "avatarfleet.paste"
)

// DefaultLookAheadMS is the default model's look-ahead: its loudness
// detector reads the audio around the frame's own time, so it needs 80 ms
// past it, not the Wav2Lip window's 200.
const DefaultLookAheadMS = 80

// DefaultModelOfSize returns the default lip-sync model for S×S face crops.
//
// Contract (README, "Media contract"): inputs mel [B,1,80,16] and face
// [B,6,S,S] (channels 0..2 the masked target, ignored here; 3..5 the
// reference, 0..1), output [B,3,S,S] in 0..1; B is dynamic, S fixed. The
// metadata declares a look-ahead of DefaultLookAheadMS (the mel window of
// the frame at t ends at t + 80 ms) and the "change" paste.
//
// What it computes:
//
//  1. Two features of the voice, by one Conv over the mel window weighted
//     by a Gaussian around the frame's own time (σ 2.5 mel frames): the
//     loudness (the mean of the bands 2..55, about 150 Hz to 3 kHz) and
//     the spread of the vowel (the energy in the first formant's band of
//     open vowels and the second formant's of front ones against the
//     voice's mean: low for the rounded o and u).
//  2. Mouth-open amount a = sigmoid(2.4·(loudness + 1.4)), shifted and
//     rescaled so that it is exactly 0 below 0.02 (silence gives 0.002):
//     vowels of espeak-ng speech at its default level give about 0.9,
//     consonants about 0.2; spread b = sigmoid of the spread feature.
//  3. Fields at levels of a and b (see mouthField: the lower lip and jaw
//     dropped, the upper lip lifted a little, the width drawn in for
//     rounded vowels, the mouth's inside and an upper-teeth hint for
//     spread ones), blended by the triangular weights of a and b over the
//     levels: one MatMul of the [B, levels] weights by the fields.
//  4. A GridSample warp of the reference by the identity grid plus the
//     blended displacement, then the opening blended toward the mouth's
//     inside (dark red, shaded toward the corners) and the teeth hint.
//  5. out = ref + m·min(1, 20·a)·(warped − ref), m 1 over the mouth and
//     jaw and 0 elsewhere: with silence, and everywhere outside the jaw,
//     the output is the reference exactly, so the "change" paste leaves the
//     avatar's photo untouched pixel for pixel.
//
// The reference's own mouth is only moved, never replaced.
func DefaultModelOfSize(size int) ([]byte, error) {
	if size < 16 || size > 512 || size%2 != 0 {
		return nil, fmt.Errorf("onnxgen: default model size %d: want an even size in 16..512", size)
	}
	s := int64(size)
	b := NewBuilder("avatarfleet_default_lipsync")
	b.Metadata(MetaLookAhead, strconv.Itoa(DefaultLookAheadMS))
	b.Metadata(MetaPaste, "change")
	batch := Dynamic("B")
	mel := b.Input(MelInput, batch, Fixed(1), Fixed(MelBands), Fixed(MelFrames))
	face := b.Input(FaceInput, batch, Fixed(6), Fixed(s), Fixed(s))
	ref := b.Op("Slice", []string{face, b.Ints(3), b.Ints(6), b.Ints(1)})

	// Features → [B,2]: a (exactly 0 in silence) and b.
	w, bias := featureWeights(DefaultLookAheadMS)
	z := b.Op("Conv", []string{mel, b.Const([]int64{2, 1, MelBands, MelFrames}, w), b.Const([]int64{2}, bias)})
	sig := b.Op("Reshape", []string{b.Op("Sigmoid", []string{z}), b.Ints(-1, 2)})
	const eps = 0.02
	ab := b.Op("Relu", []string{b.Op("Mul", []string{
		b.Op("Sub", []string{sig, b.Const([]int64{1, 2}, []float32{eps, 0})}),
		b.Const([]int64{1, 2}, []float32{1 / (1 - eps), 1})})})
	amount := b.Op("Slice", []string{ab, b.Ints(0), b.Ints(1), b.Ints(1)}) // [B,1]
	spread := b.Op("Slice", []string{ab, b.Ints(1), b.Ints(2), b.Ints(1)}) // [B,1]

	// Triangular weights over the stored levels → [B, fieldLevels].
	hat := func(v string, n int, from int) string {
		idx := make([]float32, 0, n)
		for k := from; k < n; k++ {
			idx = append(idx, float32(k))
		}
		x := b.Op("Sub", []string{b.Op("Mul", []string{v, b.Scalar(float32(n - 1))}), b.Const([]int64{1, int64(len(idx))}, idx)})
		return b.Op("Relu", []string{b.Op("Sub", []string{b.Scalar(1), b.Op("Abs", []string{x})})})
	}
	ha := b.Op("Reshape", []string{hat(amount, openLevels, 1), b.Ints(-1, openLevels-1, 1)})
	hb := b.Op("Reshape", []string{hat(spread, spreadLevels, 0), b.Ints(-1, 1, spreadLevels)})
	weights := b.Op("Reshape", []string{b.Op("Mul", []string{ha, hb}), b.Ints(-1, fieldLevels)})

	// Blended fields → displacement [B,S,S,2], open and teeth [B,1,S,S].
	n := s * s
	fields := b.Op("MatMul", []string{weights, b.Const([]int64{fieldLevels, 4 * n}, packLevels(mouthLevels(size)))})
	part := func(from, to int64, shape ...int64) string {
		return b.Op("Reshape", []string{b.Op("Slice", []string{fields, b.Ints(from), b.Ints(to), b.Ints(1)}), b.Ints(shape...)})
	}
	disp := part(0, 2*n, -1, s, s, 2)
	open := part(2*n, 3*n, -1, 1, s, s)
	teeth := part(3*n, 4*n, -1, 1, s, s)

	grid := b.Op("Add", []string{disp, b.Const([]int64{1, s, s, 2}, identityGrid(size))})
	warped := b.Op("GridSample", []string{ref, grid},
		StringAttr("mode", "bilinear"), StringAttr("padding_mode", "border"), IntAttr("align_corners", 0))
	// warped + open·(interior − warped) + teeth·(teeth colour − interior)
	inside := b.Const([]int64{1, 3, s, s}, mouthInterior(size))
	shaded := b.Op("Add", []string{warped, b.Op("Mul", []string{open, b.Op("Sub", []string{inside, warped})})})
	shaded = b.Op("Add", []string{shaded, b.Op("Mul", []string{teeth, b.Op("Sub", []string{b.Const([]int64{1, 3, 1, 1}, teethColour()), inside})})})

	// ref + region·gate·(shaded − ref): the reference exactly where nothing moves.
	gate := b.Op("Reshape", []string{b.Op("Min", []string{b.Op("Mul", []string{amount, b.Scalar(20)}), b.Scalar(1)}), b.Ints(-1, 1, 1, 1)})
	region := b.Const([]int64{1, 1, s, s}, mouthRegion(size))
	change := b.Op("Mul", []string{b.Op("Mul", []string{gate, region}), b.Op("Sub", []string{shaded, ref})})
	b.OpTo(FaceOutput, "Clip", []string{b.Op("Add", []string{ref, change}), b.Scalar(0), b.Scalar(1)})
	b.Output(FaceOutput, batch, Fixed(3), Fixed(s), Fixed(s))
	return b.Model().Marshal(), nil
}

// packLevels lays the levels' fields out as the rows of a [levels, 4·S·S]
// matrix: displacement (S·S·2), open (S·S), teeth (S·S).
func packLevels(levels []mouthLevel) []float32 {
	var out []float32
	for _, l := range levels {
		out = append(out, l.disp...)
		out = append(out, l.open...)
		out = append(out, l.teeth...)
	}
	return out
}

// mouthRegion is 1 on the pixels any level changes (with a pixel's margin
// for GridSample's bilinear taps) and 0 elsewhere.
func mouthRegion(size int) []float32 {
	moved := make([]bool, size*size)
	for _, l := range mouthLevels(size) {
		for k := range moved {
			if l.disp[2*k] != 0 || l.disp[2*k+1] != 0 || l.open[k] != 0 || l.teeth[k] != 0 {
				moved[k] = true
			}
		}
	}
	out := make([]float32, size*size)
	for j := range size {
		for i := range size {
			for dj := -1; dj <= 1; dj++ {
				for di := -1; di <= 1; di++ {
					y, x := j+dj, i+di
					if y >= 0 && y < size && x >= 0 && x < size && moved[y*size+x] {
						out[j*size+i] = 1
					}
				}
			}
		}
	}
	return out
}

// Mel window shape of the contract: [B,1,MelBands,MelFrames].
const (
	MelBands  = 80
	MelFrames = 16
)

// Feature detectors (steps 1 and 2 of DefaultModelOfSize).
const (
	voiceBandLo  = 2  // first mel band of the voice range (≈150 Hz)
	voiceBandHi  = 55 // last (≈3 kHz)
	frameSigma   = 2.5
	openGain     = 2.4
	openMidpoint = -1.4 // loudness at which a = 0.5
	// Spread: the voice's energy in the first formant's band of open
	// vowels (≈550..900 Hz) and the second and third formants' of front
	// vowels (≈1.8..3 kHz), against its mean: high for i, e and a, low for
	// the rounded o and u (their formants lie below 450 Hz and near 1 kHz).
	spreadF1Lo, spreadF1Hi = 12, 21
	spreadF2Lo, spreadF2Hi = 42, 55
	spreadGain             = 4.0
	spreadMidpoint         = -0.35 // feature at which b = 0.5
)

// frameCentre is where, in the mel window, the default model looks: 3 mel
// frames (37.5 ms) past the video frame's own start, when the window ends
// lookAheadMS after that start. Lips lead the sound they make (the mouth
// opens before the vowel is heard), so the frame shown at t takes the
// sound of about t + 40 ms.
func frameCentre(lookAheadMS int) float64 {
	own := float64(MelFrames) - math.Round(float64(lookAheadMS)*80/1000)
	return own + 3
}

// featureWeights is the Conv kernel [2,1,80,16] and bias [2] of the two
// features: openGain·(loudness − openMidpoint) and spreadGain·(high − low −
// spreadMidpoint), each band's mean taken over the window's frames with
// the Gaussian weights around frameCentre.
func featureWeights(lookAheadMS int) ([]float32, []float32) {
	var frame [MelFrames]float64
	var sum float64
	c := frameCentre(lookAheadMS)
	for t := range frame {
		d := (float64(t) - c) / frameSigma
		frame[t] = math.Exp(-0.5 * d * d)
		sum += frame[t]
	}
	w := make([]float32, 2*MelBands*MelFrames)
	add := func(ch, lo, hi int, gain float64) {
		bands := float64(hi - lo + 1)
		for band := lo; band <= hi; band++ {
			for t := range frame {
				w[ch*MelBands*MelFrames+band*MelFrames+t] += float32(gain * frame[t] / (sum * bands))
			}
		}
	}
	add(0, voiceBandLo, voiceBandHi, openGain)
	add(1, spreadF1Lo, spreadF1Hi, spreadGain/2)
	add(1, spreadF2Lo, spreadF2Hi, spreadGain/2)
	add(1, voiceBandLo, voiceBandHi, -spreadGain)
	return w, []float32{float32(-openGain * openMidpoint), float32(-spreadGain * spreadMidpoint)}
}
