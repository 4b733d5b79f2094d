// Package lipmeasure holds what the lip-sync measurements from outside
// (e2e/avsync, e2e/mediabench) share: how they read a decoded frame's mouth
// region, how far it is from the idle frames, and the default model
// re-declared with another look-ahead.
package lipmeasure

import (
	"image"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// Luma copies the Y values of region r of img (clipped to the image).
func Luma(img *image.YCbCr, r image.Rectangle) []float64 {
	r = r.Intersect(img.Rect)
	out := make([]float64, 0, r.Dx()*r.Dy())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			out = append(out, float64(img.Y[img.YOffset(x, y)]))
		}
	}
	return out
}

// Nearest is the mean absolute difference of m to the closest of refs
// (regions read alike with Luma).
func Nearest(m []float64, refs [][]float64) float64 {
	best := math.Inf(1)
	for _, r := range refs {
		var sum float64
		for i := range m {
			sum += math.Abs(m[i] - r[i])
		}
		best = min(best, sum/float64(len(m)))
	}
	return best
}

// LookAheadModel writes the generated default model re-declared with a
// look-ahead of ms (ONNX metadata avatarfleet.lookahead_ms; the last entry
// wins) to a temporary file and returns the worker flags that load it.
func LookAheadModel(tb testing.TB, ms int) []string {
	tb.Helper()
	if ms < 0 || ms > int(inference.MaxLookAhead.Milliseconds()) {
		tb.Fatalf("look-ahead %d ms: want 0..%d", ms, inference.MaxLookAhead.Milliseconds())
	}
	data, err := onnxgen.DefaultModel()
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(tb.TempDir(), "default-lookahead.onnx")
	if err := os.WriteFile(p, onnxgen.AppendMetadata(data, inference.LookAheadKey, strconv.Itoa(ms)), 0o600); err != nil {
		tb.Fatal(err)
	}
	return []string{"--model", p}
}
