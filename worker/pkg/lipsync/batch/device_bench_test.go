package batch

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// The benchmarks run on the CPU unless told otherwise; scripts/gpu-bench.sh
// runs them on a GPU machine with -bench.device cuda:0 and the CUDA build
// of ONNX Runtime.
var (
	benchDevice inference.Device
	benchORTLib = flag.String("bench.ortlib", "", "ONNX Runtime library the benchmarks load (the CUDA build for -bench.device cuda:N); empty: the usual search")
	benchModel  = flag.String("bench.model", "default", "model BenchmarkSessions runs: default or wav2lip (the Wav2Lip-shaped benchmark model)")
)

func init() {
	flag.Func("bench.device", "device the benchmarks run the model on: cpu, or cuda:N (CUDA device_id N)", func(s string) error {
		d, err := parseDevice(s)
		benchDevice = d
		return err
	})
}

// parseDevice reads "cpu" or "cuda:N".
func parseDevice(s string) (inference.Device, error) {
	if s == "cpu" {
		return inference.CPU(), nil
	}
	if rest, ok := strings.CutPrefix(s, "cuda:"); ok {
		if i, err := strconv.Atoi(rest); err == nil && i >= 0 && i < 64 {
			return inference.GPU(i), nil
		}
	}
	return inference.Device{}, fmt.Errorf("device %q: want cpu or cuda:N", s)
}

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want inference.Device
		ok   bool
	}{{"cpu", inference.CPU(), true}, {"cuda:0", inference.GPU(0), true}, {"cuda:7", inference.GPU(7), true},
		{"", inference.Device{}, false}, {"cuda:", inference.Device{}, false}, {"cuda:-1", inference.Device{}, false},
		{"cuda:64", inference.Device{}, false}, {"gpu0", inference.Device{}, false}} {
		got, err := parseDevice(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDevice(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// benchModelGen is the generator of -bench.model.
func benchModelGen(tb testing.TB) func() ([]byte, error) {
	switch *benchModel {
	case "default":
		return onnxgen.DefaultModel
	case "wav2lip":
		return onnxgen.BenchmarkModel
	}
	tb.Fatalf("-bench.model %q: want default or wav2lip", *benchModel)
	return nil
}

// sessionCounts are the session counts BenchmarkSessions tries in turn: a
// GPU gets more.
func sessionCounts() []int {
	n := []int{2, 4, 8, 12, 16, 24, 32, 48, 64, 96}
	if benchDevice.GPU {
		n = append(n, 128, 192, 256, 384, 512)
	}
	return n
}

// BenchmarkFirstFrame is the model's share of a session's time to first
// frame: "cold" opens a context and runs one frame (a session with no
// prewarmed context), "prewarmed" runs the first frame of a context opened
// beforehand (what the worker's pool hands a new session).
func BenchmarkFirstFrame(b *testing.B) {
	for _, gen := range []struct {
		name string
		make func() ([]byte, error)
	}{{"default", onnxgen.DefaultModel}, {"wav2lip", onnxgen.BenchmarkModel}} {
		m := loadModel(b, gen.name, gen.make)
		opts := inference.ContextOptions{Batch: 1, IntraOpThreads: 1, Device: benchDevice}
		first := func(o lipsync.Model) {
			f := newFrame(o.Shape(), 0)
			fillFrame(&f, 1)
			if err := o.Run(context.Background(), []lipsync.Frame{f}); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(gen.name+"/cold", func(b *testing.B) {
			for b.Loop() {
				o, err := lipsync.NewONNX(m, opts)
				if err != nil {
					b.Fatal(err)
				}
				first(o)
				b.StopTimer()
				_ = o.Close()
				b.StartTimer()
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/first-frame")
		})
		b.Run(gen.name+"/prewarmed", func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				o, err := lipsync.NewONNX(m, opts)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				first(o)
				total += time.Since(t0)
				b.StopTimer()
				_ = o.Close()
				b.StartTimer()
			}
			b.ReportMetric(total.Seconds()*1e3/float64(b.N), "ms/first-frame")
		})
	}
}

// BenchmarkContextMemory is the memory one session's context holds: it
// opens 8 contexts of each model (batch 1, each run once) and reports the
// growth per context of the GPU's used memory (nvidia-smi) on a GPU, or of
// the process's resident set on the CPU.
func BenchmarkContextMemory(b *testing.B) {
	const n = 8
	for _, gen := range []struct {
		name string
		make func() ([]byte, error)
	}{{"default", onnxgen.DefaultModel}, {"wav2lip", onnxgen.BenchmarkModel}} {
		m := loadModel(b, gen.name, gen.make)
		b.Run(gen.name, func(b *testing.B) {
			var perCtx float64
			for b.Loop() {
				before := usedMiB(b)
				var open []lipsync.Model
				for range n {
					o, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: 1, IntraOpThreads: 1, Device: benchDevice})
					if err != nil {
						b.Fatal(err)
					}
					f := newFrame(o.Shape(), 0)
					if err := o.Run(context.Background(), []lipsync.Frame{f}); err != nil {
						b.Fatal(err)
					}
					open = append(open, o)
				}
				perCtx = (usedMiB(b) - before) / n
				for _, o := range open {
					_ = o.Close()
				}
			}
			b.ReportMetric(perCtx, "MiB/context")
		})
	}
}

// usedMiB is the benchmark device's used memory: the GPU's from nvidia-smi,
// or this process's resident set.
func usedMiB(tb testing.TB) float64 {
	tb.Helper()
	if benchDevice.GPU {
		out, err := exec.Command("nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
			"-i", strconv.Itoa(benchDevice.Index)).Output()
		if err != nil {
			tb.Fatalf("nvidia-smi: %v", err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		if err != nil {
			tb.Fatalf("nvidia-smi said %q: %v", out, err)
		}
		return v
	}
	debug.FreeOSMemory() // so the Go heap's garbage does not count
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				tb.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb / 1024
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
