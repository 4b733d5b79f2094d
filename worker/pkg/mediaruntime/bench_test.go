package mediaruntime

import (
	"fmt"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// BenchmarkTimeToFirstFrame measures a session start up to its first
// encoded video frame (a VP8 keyframe of the default 512×512 avatar): Start
// (avatar, transport, inference context, encoders) plus the first tick of
// its media clock, taken at once. Each iteration uses a fresh runtime, so
// "cold" pays for creating the session's ONNX Runtime context and
// "prewarm" takes it from the pool; runtime creation is not timed.
// The default model is small, so its context is cheap; the wav2lip cases
// use the Wav2Lip-shaped benchmark model, whose context creation is what
// prewarming saves in production.
func BenchmarkTimeToFirstFrame(b *testing.B) {
	models := map[string]*inference.Model{"": newModel(b)}
	for _, bc := range []struct {
		name, model string
		prewarm     int
	}{{"prewarm", "", 1}, {"cold", "", 0}, {"wav2lip/prewarm", "wav2lip", 1}, {"wav2lip/cold", "wav2lip", 0}} {
		if models[bc.model] == nil {
			models[bc.model] = loadModel(b, bc.model, onnxgen.BenchmarkModel)
		}
		model := models[bc.model]
		b.Run(bc.name, func(b *testing.B) {
			var total time.Duration
			for i := range b.N {
				b.StopTimer()
				c := newChurnUntimed(b, model, bc.prewarm)
				id := fmt.Sprintf("b%d", i)
				b.StartTimer()
				t0 := time.Now()
				c.start(b, id, 0)
				total += time.Since(t0)
				b.StopTimer()
				c.stop(b, id)
				c.close(b)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/first-frame")
		})
	}
}
