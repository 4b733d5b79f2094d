package capacity

import (
	"strconv"
	"strings"
	"testing"
)

func TestSlots(t *testing.T) {
	cpu := func(ms float64, cores, threads int) Input {
		return Input{Timing: []BatchTiming{{1, ms}, {4, ms / 2}}, CPU: true, Cores: cores, IntraOpThreads: threads,
			PipelineCPUMS: 3.2, Utilisation: 0.75, Cap: 256}
	}
	gpu := func(ts ...BatchTiming) Input {
		return Input{Timing: ts, Cores: 16, IntraOpThreads: 1, GPUs: 1, PipelineCPUMS: 3.2, Utilisation: 0.75, Cap: 256}
	}
	for _, tc := range []struct {
		name  string
		in    Input
		slots int
		batch int
		bound string
	}{
		// 2 × 40 × 0.75 = 60 ms of CPU per frame; 0.8 + 3.2 = 4 ms each → 15.
		{"cpu two cores", cpu(0.8, 2, 1), 15, 1, BoundCPU},
		// 4 threads per session: 0.8 × 4 + 3.2 = 6.4 → ⌊60 / 6.4⌋ = 9.
		{"cpu intra-op threads count", cpu(0.8, 2, 4), 9, 1, BoundCPU},
		{"cpu uses batch 1, not the cheaper batch", cpu(10, 2, 1), 4, 1, BoundCPU},
		{"cpu too slow still takes one", cpu(68, 1, 1), 1, 1, BoundMin},
		{"cpu many cores hit the cap", cpu(0.1, 512, 1), 256, 1, BoundCap},
		// 30 ms / 1.5 ms at batch 8 = 20; host CPU 16 × 30 / 3.2 = 150.
		{"gpu best batch", gpu(BatchTiming{1, 5}, BatchTiming{4, 2}, BatchTiming{8, 1.5}), 20, 8, BoundInference},
		{"gpu tie keeps the smaller batch", gpu(BatchTiming{1, 3}, BatchTiming{2, 3}), 10, 1, BoundInference},
		{"gpu bounded by the host cpu", func() Input { in := gpu(BatchTiming{1, 0.05}); in.GPUs = 8; return in }(), 18, 1, BoundCPU},
		{"gpu bounded by memory", func() Input {
			in := gpu(BatchTiming{1, 0.5})
			in.MemoryBytes, in.SessionBytes = 8<<30, 1<<30
			return in
		}(), 6, 1, BoundMemory},
		{"gpu slower than real time", gpu(BatchTiming{1, 68}), 1, 1, BoundMin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Slots(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if res.Slots != tc.slots || res.Batch != tc.batch || res.Bound != tc.bound {
				t.Fatalf("Slots = %d at batch %d bound %q, want %d at batch %d bound %q (%s)",
					res.Slots, res.Batch, res.Bound, tc.slots, tc.batch, tc.bound, res.Rule)
			}
			if !strings.Contains(res.Rule, "= "+itoa(tc.slots)) {
				t.Errorf("rule %q does not state the result", res.Rule)
			}
		})
	}
}

func TestSlotsRejects(t *testing.T) {
	good := Input{Timing: []BatchTiming{{1, 1}}, Cores: 1, IntraOpThreads: 1, Utilisation: 0.5, Cap: 4}
	for _, tc := range []struct {
		name string
		mod  func(*Input)
	}{
		{"no timing", func(in *Input) { in.Timing = nil }},
		{"zero ms", func(in *Input) { in.Timing = []BatchTiming{{1, 0}} }},
		{"batch 0", func(in *Input) { in.Timing = []BatchTiming{{0, 1}} }},
		{"no cores", func(in *Input) { in.Cores = 0 }},
		{"no threads", func(in *Input) { in.IntraOpThreads = 0 }},
		{"utilisation above 1", func(in *Input) { in.Utilisation = 1.5 }},
		{"utilisation 0", func(in *Input) { in.Utilisation = 0 }},
		{"negative pipeline", func(in *Input) { in.PipelineCPUMS = -1 }},
		{"cap 0", func(in *Input) { in.Cap = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := good
			tc.mod(&in)
			if _, err := Slots(in); err == nil {
				t.Fatalf("Slots(%+v) = nil error", in)
			}
		})
	}
	if _, err := Slots(good); err != nil {
		t.Fatalf("good input: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
