// Package capacity turns a timing of the worker's lip-sync model into the
// number of 25 fps sessions a device sustains with headroom
// (--slots-per-gpu auto). Measure times the model at a few batch sizes on
// one device; Slots is the rule: a pure function of that timing and the
// machine's CPU, table-tested on its own.
//
// # The rule
//
// A session needs one frame every FrameMS (40 ms at 25 fps). Only a share
// of that budget is planned for (Utilisation, 0.75 by default: a quarter
// is headroom for bursts, the SFU, GC and the rest of the host).
//
//   - Inference on a GPU: sessions = ⌊FrameMS·Utilisation / ms-per-frame⌋
//     at the batch size with the cheapest ms per frame (several sessions'
//     frames can share a batched call).
//   - Inference on the CPU: each session runs its own batch-1 context, so
//     it is timed at batch 1 (the smallest batch the model allows), and it shares the cores with the rest of the
//     pipeline: sessions = ⌊cores·FrameMS·Utilisation /
//     (ms-per-frame·threads + PipelineCPUMS)⌋, where threads is the
//     intra-op threads per session (an upper bound on the CPU time of one
//     inference) and PipelineCPUMS the CPU one session spends per frame
//     outside inference (mel, crop, composite, VP8, Opus, RTP).
//   - Every session of a GPU also needs PipelineCPUMS of the host's CPU,
//     so the host's cores are split between the GPUs: a GPU gets at most
//     ⌊cores·FrameMS·Utilisation / PipelineCPUMS / GPUs⌋.
//   - Memory, where the per-session figure is known: at most
//     ⌊MemoryBytes·Utilisation / SessionBytes⌋.
//
// The result is the smallest of these bounds, at least 1 (a device that
// is too slow still takes one session, and says so in Bound) and at most
// Cap.
package capacity

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Defaults of the rule.
const (
	// FrameMS is the frame period at 25 fps.
	FrameMS = 40.0
	// DefaultUtilisation is the planned share of each frame's budget.
	DefaultUtilisation = 0.75
	// DefaultPipelineCPUMS is the CPU one speaking session spends per
	// frame outside inference with the default avatar (512×512): the
	// project's BenchmarkConcurrentSessions measured 3.8 ms of process CPU
	// per speaking frame at 4–8 sessions on the 2-core development VM
	// (README, "Sessions per core"), of which the default model's
	// inference is about 0.6 ms (BenchmarkRun/default/batch1), leaving
	// 3.2 ms for mel, crop, composite, VP8, Opus and RTP. Speaking is the
	// worst case: an idle session costs about 2.2 ms in all.
	DefaultPipelineCPUMS = 3.2
)

// Bounds that decide a count (Result.Bound).
const (
	BoundInference = "inference"
	BoundCPU       = "cpu"
	BoundMemory    = "memory"
	BoundCap       = "cap"
	BoundMin       = "min"
)

// Input is what the rule needs about one device.
type Input struct {
	// Timing is the device's measurement (at least one batch size).
	Timing []BatchTiming
	// CPU is true for the CPU device: inference shares the host's cores
	// with the pipeline.
	CPU bool
	// Cores is the CPU threads the worker may use (GOMAXPROCS).
	Cores int
	// IntraOpThreads is ONNX Runtime's intra-op threads per session.
	IntraOpThreads int
	// GPUs is how many GPU devices share the host's cores (0 for the CPU
	// device).
	GPUs int
	// PipelineCPUMS is the non-inference CPU per session and frame.
	PipelineCPUMS float64
	// Utilisation is the planned share of a frame's budget, in (0, 1].
	Utilisation float64
	// MemoryBytes and SessionBytes bound by memory when both are known
	// (0: not measured).
	MemoryBytes, SessionBytes uint64
	// Cap is the largest count (the worker's slot limit).
	Cap int
}

// BatchTiming is the measured cost of one batch size.
type BatchTiming struct {
	Batch      int
	MSPerFrame float64 // wall time of one batched call / Batch
}

// Result is the rule's answer for one device.
type Result struct {
	Slots int
	// Batch is the batch size whose ms per frame the rule used.
	Batch int
	// Bound names the limit that decided Slots.
	Bound string
	// Rule is the formula with its numbers, for people.
	Rule string
}

// Validate checks in.
func (in Input) Validate() error {
	if len(in.Timing) == 0 {
		return errors.New("capacity: no timing")
	}
	for _, t := range in.Timing {
		if t.Batch < 1 || !(t.MSPerFrame > 0) || math.IsInf(t.MSPerFrame, 0) {
			return fmt.Errorf("capacity: bad timing %+v", t)
		}
	}
	switch {
	case in.Cores < 1:
		return fmt.Errorf("capacity: cores %d", in.Cores)
	case in.IntraOpThreads < 1:
		return fmt.Errorf("capacity: intra-op threads %d", in.IntraOpThreads)
	case in.GPUs < 0:
		return fmt.Errorf("capacity: GPUs %d", in.GPUs)
	case !(in.PipelineCPUMS >= 0):
		return fmt.Errorf("capacity: pipeline CPU %v ms", in.PipelineCPUMS)
	case !(in.Utilisation > 0 && in.Utilisation <= 1):
		return fmt.Errorf("capacity: utilisation %v: want (0, 1]", in.Utilisation)
	case in.Cap < 1:
		return fmt.Errorf("capacity: cap %d", in.Cap)
	}
	return nil
}

// Slots applies the rule (see the package documentation) to in.
func Slots(in Input) (Result, error) {
	if err := in.Validate(); err != nil {
		return Result{}, err
	}
	budget := FrameMS * in.Utilisation
	var parts []string
	res := Result{Slots: math.MaxInt}
	take := func(n float64, bound, why string) {
		parts = append(parts, why)
		if n < float64(res.Slots) {
			res.Slots, res.Bound = int(n), bound
		}
	}
	if in.CPU {
		t := smallest(in.Timing)
		res.Batch = t.Batch
		perSession := t.MSPerFrame*float64(in.IntraOpThreads) + in.PipelineCPUMS
		take(math.Floor(float64(in.Cores)*budget/perSession), BoundCPU,
			fmt.Sprintf("cpu: ⌊%d cores × %.0f ms × %.2f / (%.3f ms inference × %d threads + %.2f ms pipeline)⌋",
				in.Cores, FrameMS, in.Utilisation, t.MSPerFrame, in.IntraOpThreads, in.PipelineCPUMS))
	} else {
		t := best(in.Timing)
		res.Batch = t.Batch
		take(math.Floor(budget/t.MSPerFrame), BoundInference,
			fmt.Sprintf("inference: ⌊%.0f ms × %.2f / %.3f ms per frame at batch %d⌋", FrameMS, in.Utilisation, t.MSPerFrame, t.Batch))
		if in.PipelineCPUMS > 0 && in.GPUs > 0 {
			take(math.Floor(float64(in.Cores)*budget/in.PipelineCPUMS/float64(in.GPUs)), BoundCPU,
				fmt.Sprintf("host cpu: ⌊%d cores × %.0f ms × %.2f / %.2f ms pipeline / %d GPUs⌋",
					in.Cores, FrameMS, in.Utilisation, in.PipelineCPUMS, in.GPUs))
		}
	}
	if in.MemoryBytes > 0 && in.SessionBytes > 0 {
		take(math.Floor(float64(in.MemoryBytes)*in.Utilisation/float64(in.SessionBytes)), BoundMemory,
			fmt.Sprintf("memory: ⌊%d B × %.2f / %d B per session⌋", in.MemoryBytes, in.Utilisation, in.SessionBytes))
	}
	if res.Slots > in.Cap {
		res.Slots, res.Bound = in.Cap, BoundCap
	}
	if res.Slots < 1 {
		res.Slots, res.Bound = 1, BoundMin
	}
	res.Rule = fmt.Sprintf("min(%s) = %d (%s; at least 1, at most %d)", strings.Join(parts, ", "), res.Slots, res.Bound, in.Cap)
	return res, nil
}

// smallest is the timing of the smallest batch (1 unless the model fixes
// another): what a session's own context runs.
func smallest(ts []BatchTiming) BatchTiming {
	s := ts[0]
	for _, t := range ts[1:] {
		if t.Batch < s.Batch {
			s = t
		}
	}
	return s
}

// best is the timing with the cheapest frame (the smaller batch on a tie).
func best(ts []BatchTiming) BatchTiming {
	b := ts[0]
	for _, t := range ts[1:] {
		if t.MSPerFrame < b.MSPerFrame || (t.MSPerFrame == b.MSPerFrame && t.Batch < b.Batch) {
			b = t
		}
	}
	return b
}
