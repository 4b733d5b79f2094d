package inference

import (
	"strconv"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// BenchmarkRun measures one Context.Run on the CPU with one intra-op thread
// (the worker's default), for the default and the Wav2Lip-shaped benchmark
// model at batch 1 and 4. Besides ns/op it reports ms/frame and the frames
// per second one such session sustains on one core:
//
//	go test -run '^$' -bench . ./worker/pkg/inference
func BenchmarkRun(b *testing.B) {
	rt := newRuntime(b)
	for _, gen := range []struct {
		name string
		make func() ([]byte, error)
	}{
		{"default", onnxgen.DefaultModel},
		{"wav2lip", onnxgen.BenchmarkModel},
	} {
		data, err := gen.make()
		if err != nil {
			b.Fatal(err)
		}
		m, err := rt.LoadModelData(gen.name, data)
		if err != nil {
			b.Fatal(err)
		}
		for _, batch := range []int{1, 4} {
			b.Run(gen.name+"/batch"+strconv.Itoa(batch), func(b *testing.B) {
				benchRun(b, m, batch)
			})
		}
	}
}

func benchRun(b *testing.B, m *Model, batch int) {
	c := newContext(b, m, ContextOptions{Batch: batch, IntraOpThreads: 1})
	var mel, face []float32
	one := syntheticFace(c.Size())
	for i := range batch {
		level := float32(loud)
		if i%2 == 1 {
			level = medium
		}
		mel = append(mel, voiceMel(level)...)
		face = append(face, one...)
	}
	out := make([]float32, c.OutLen())
	if err := c.Run(mel, face, out); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Run(mel, face, out); err != nil {
			b.Fatal(err)
		}
	}
	perFrame := b.Elapsed().Seconds() / float64(b.N) / float64(batch)
	b.ReportMetric(perFrame*1e3, "ms/frame")
	b.ReportMetric(1/perFrame, "frames/s")
}
