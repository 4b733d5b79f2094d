package capacity

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference/inferencetest"
)

// autoCPU runs what `--gpus cpu --slots-per-gpu auto` runs.
func autoCPU(t testing.TB, m *inference.Model) *fleetv1.GPU {
	t.Helper()
	dev := &fleetv1.GPU{Index: 0, Name: "cpu", Slots: 2, Cpu: true}
	err := Apply(context.Background(), []*fleetv1.GPU{dev}, func(*fleetv1.GPU) Target {
		return Target{Opener: ModelOpener{Model: m, Device: inference.CPU(), IntraOpThreads: 1}, Device: "cpu", CPU: true}
	}, Config{Cores: runtime.GOMAXPROCS(0), IntraOpThreads: 1, Cap: 256})
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// TestAutoSlotsDefaultModel measures the real default model on this
// machine's CPU and checks the count against the rule applied by hand to
// what was measured; -v prints the count and the timing.
func TestAutoSlotsDefaultModel(t *testing.T) {
	m := inferencetest.Default(t)
	start := time.Now()
	dev := autoCPU(t, m)
	took := time.Since(start)
	c := dev.GetCapacity()
	if c == nil {
		t.Fatal("no capacity record")
	}
	if len(c.GetTimings()) != 4 {
		t.Fatalf("timings %v, want batches 1, 2, 4, 8", c.GetTimings())
	}
	for i, bt := range c.GetTimings() {
		if want := uint32(1) << i; bt.GetBatch() != want || !(bt.GetMsPerFrame() > 0 && bt.GetMsPerFrame() < 1000) {
			t.Errorf("timing %d = %v, want batch %d with a plausible ms per frame", i, bt, want)
		}
	}
	b1 := c.GetTimings()[0].GetMsPerFrame()
	cores := runtime.GOMAXPROCS(0)
	want := int(float64(cores) * FrameMS * DefaultUtilisation / (b1 + DefaultPipelineCPUMS))
	want = max(1, min(256, want))
	if int(dev.GetSlots()) != want {
		t.Errorf("slots %d, want %d from %.3f ms per frame on %d cores", dev.GetSlots(), want, b1, cores)
	}
	if c.GetDevice() != "cpu" || c.GetBatch() != 1 || c.GetCpuThreads() != uint32(cores) || c.GetBound() == "" ||
		!strings.Contains(c.GetRule(), "= "+strconv.Itoa(want)) || c.GetMeasuredAt().AsTime().Before(start.Add(-time.Second)) {
		t.Errorf("capacity record %v", c)
	}
	// The default budget is 4 s; allow for -race and a busy machine.
	if took > 30*time.Second {
		t.Errorf("measurement took %v", took)
	}
	t.Logf("auto slots on this machine's CPU (%d threads): %d (%s); ms per frame %v; took %v",
		cores, dev.GetSlots(), c.GetBound(), c.GetTimings(), took)
}

// BenchmarkAutoSlots prints the --slots-per-gpu auto count of this
// machine's CPU with the default model (one measurement per iteration):
//
//	go test -tags dynamic -run '^$' -bench AutoSlots -benchtime 1x ./worker/pkg/capacity
func BenchmarkAutoSlots(b *testing.B) {
	m := inferencetest.Default(b)
	var dev *fleetv1.GPU
	for b.Loop() {
		dev = autoCPU(b, m)
	}
	c := dev.GetCapacity()
	b.ReportMetric(float64(dev.GetSlots()), "slots")
	b.ReportMetric(float64(c.GetCpuThreads()), "cpu_threads")
	for _, bt := range c.GetTimings() {
		b.ReportMetric(bt.GetMsPerFrame(), "ms/frame@b"+strconv.Itoa(int(bt.GetBatch())))
	}
	b.Logf("rule: %s", c.GetRule())
}
