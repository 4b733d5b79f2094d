package batch

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// BenchmarkRunBatch is one ONNX Runtime run of B frames on the CPU, one
// intra-op thread, for the default and the Wav2Lip-shaped benchmark model
// at batch 1, 4 and 16; it reports ms/frame:
//
//	go test -tags dynamic -run '^$' -bench RunBatch ./worker/pkg/lipsync/batch
func BenchmarkRunBatch(b *testing.B) {
	for _, gen := range []struct {
		name string
		make func() ([]byte, error)
	}{{"default", onnxgen.DefaultModel}, {"wav2lip", onnxgen.BenchmarkModel}} {
		m := loadModel(b, gen.name, gen.make)
		for _, n := range []int{1, 4, 16} {
			b.Run(gen.name+"/batch"+strconv.Itoa(n), func(b *testing.B) {
				o, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: n, IntraOpThreads: 1, Device: benchDevice})
				if err != nil {
					b.Fatal(err)
				}
				defer o.Close()
				frames := make([]lipsync.Frame, n)
				for i := range frames {
					frames[i] = newFrame(o.Shape(), 0)
					fillFrame(&frames[i], i)
				}
				ctx := context.Background()
				if err := o.Run(ctx, frames); err != nil { // warm-up
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := o.Run(ctx, frames); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N)/float64(n), "ms/frame")
			})
		}
	}
}

// BenchmarkSessions finds how many 25 fps sessions the device sustains on
// the model of -bench.model (the default model unless it says wav2lip),
// inference only: each session renders one frame every
// 40 ms (their clocks spread over the period), and N sessions are
// sustained when at most 1% of their frames finish more than 40 ms after
// they were due. "direct" gives each session its own context (one
// intra-op thread, the worker's default); "batched" shares an Executor
// (batches of up to 16, 4 ms queue delay, one context per batch size
// with GOMAXPROCS intra-op threads). It reports the largest N that held:
//
//	go test -tags dynamic -run '^$' -bench Sessions -benchtime 1x ./worker/pkg/lipsync/batch
func BenchmarkSessions(b *testing.B) {
	m := loadModel(b, *benchModel, benchModelGen(b))
	threads := runtime.GOMAXPROCS(0)
	modes := []struct {
		name string
		open func(n int) ([]lipsync.Model, func() error, error)
	}{
		{"direct", func(n int) ([]lipsync.Model, func() error, error) {
			ms := make([]lipsync.Model, 0, n)
			closeAll := func() error {
				for _, m := range ms {
					_ = m.Close()
				}
				return nil
			}
			for range n {
				o, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: 1, IntraOpThreads: 1, Device: benchDevice})
				if err != nil {
					return nil, closeAll, err
				}
				ms = append(ms, o)
			}
			return ms, closeAll, nil
		}},
		{"batched", func(n int) ([]lipsync.Model, func() error, error) {
			e, err := New(Options{Open: onnxOpen(m, threads), MaxBatch: 16, MaxDelay: DefaultMaxDelay})
			if err != nil {
				return nil, func() error { return nil }, err
			}
			ms := make([]lipsync.Model, n)
			for i := range ms {
				ms[i] = e.Session()
			}
			return ms, e.Close, nil
		}},
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			sustained := 0
			for b.Loop() {
				sustained = 0
				for _, n := range sessionCounts() {
					ms, closeAll, err := mode.open(n)
					if err != nil {
						b.Fatal(err)
					}
					late, total := pace(ms, 2*time.Second)
					_ = closeAll()
					b.Logf("%s: %d sessions: %d of %d frames late (%.1f%%)", mode.name, n, late, total, 100*float64(late)/float64(total))
					if late*100 > total {
						break
					}
					sustained = n
				}
			}
			b.ReportMetric(float64(sustained), "sessions")
		})
	}
}

// pace runs one session per model at 25 fps for d and counts the frames
// finished more than a frame late.
func pace(ms []lipsync.Model, d time.Duration) (late, total int) {
	const period = 40 * time.Millisecond
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(d)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, m := range ms {
		offset := period * time.Duration(i) / time.Duration(len(ms))
		wg.Go(func() {
			f := newFrame(m.Shape(), 0)
			fillFrame(&f, i)
			batch := []lipsync.Frame{f}
			l, t := 0, 0
			for k := 0; ; k++ {
				due := start.Add(offset + time.Duration(k)*period)
				if due.After(end) {
					break
				}
				time.Sleep(time.Until(due))
				if err := m.Run(context.Background(), batch); err != nil {
					panic(err) // a benchmark's models do not fail
				}
				t++
				if time.Since(due) > period {
					l++
				}
			}
			mu.Lock()
			late, total = late+l, total+t
			mu.Unlock()
		})
	}
	wg.Wait()
	return late, total
}
