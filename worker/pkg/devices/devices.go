// Package devices turns the worker's --gpus and --slots-per-gpu flags into
// the devices it advertises: NVIDIA GPUs found through NVML, or one CPU
// stand-in device when there is no driver. A machine without a driver must
// still run a worker, so NVML failures mean "no GPU", never a crash.
package devices

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Mode is how devices are chosen.
type Mode int

// The --gpus modes.
const (
	// ModeAuto uses every GPU NVML finds, or the CPU device when none.
	ModeAuto Mode = iota
	// ModeCPU uses the CPU device only.
	ModeCPU
	// ModeList uses the listed GPU indices, which must exist.
	ModeList
)

// Spec is a parsed --gpus value.
type Spec struct {
	Mode    Mode
	Indices []uint32 // ModeList only, ascending and unique
}

// maxIndex bounds list entries: no node has more GPUs, and a typo like
// "10000" should fail here rather than as a missing device.
const maxIndex = 255

// MaxSlotsPerGPU bounds --slots-per-gpu.
const MaxSlotsPerGPU = 256

// Default slots per device when --slots-per-gpu is 0.
const (
	DefaultGPUSlots = 1
	DefaultCPUSlots = 2
)

// ParseSpec parses a --gpus value: "auto" (or empty), "cpu", or a
// comma-separated list of GPU indices such as "0,1".
func ParseSpec(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "", "auto":
		return Spec{Mode: ModeAuto}, nil
	case "cpu":
		return Spec{Mode: ModeCPU}, nil
	}
	var idx []uint32
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return Spec{}, fmt.Errorf("--gpus %q: empty entry in list", s)
		}
		n, err := strconv.ParseUint(part, 10, 32)
		if err != nil {
			return Spec{}, fmt.Errorf("--gpus %q: %q is not auto, cpu or a GPU index", s, part)
		}
		if n > maxIndex {
			return Spec{}, fmt.Errorf("--gpus %q: index %d is above %d", s, n, maxIndex)
		}
		if slices.Contains(idx, uint32(n)) {
			return Spec{}, fmt.Errorf("--gpus %q: index %d listed twice", s, n)
		}
		idx = append(idx, uint32(n))
	}
	slices.Sort(idx)
	return Spec{Mode: ModeList, Indices: idx}, nil
}

// Info describes one GPU found by discovery.
type Info struct {
	Index       uint32
	Name        string
	MemoryBytes uint64
}

// ErrNoDriver is returned by a Discoverer when no GPU driver is usable.
var ErrNoDriver = errors.New("no GPU driver")

// Discoverer lists the machine's GPUs.
type Discoverer interface {
	Discover(ctx context.Context) ([]Info, error)
}

// Resolve returns the devices a worker advertises for spec. slotsPerGPU 0
// means the default (DefaultGPUSlots on a GPU, DefaultCPUSlots on the CPU).
// In auto mode a discovery failure falls back to the CPU device; a list
// needs working discovery and every listed index present.
func Resolve(ctx context.Context, spec Spec, slotsPerGPU int, d Discoverer) ([]*fleetv1.GPU, error) {
	if slotsPerGPU < 0 || slotsPerGPU > MaxSlotsPerGPU {
		return nil, fmt.Errorf("--slots-per-gpu %d: want 0 (default) or 1..%d", slotsPerGPU, MaxSlotsPerGPU)
	}
	gpuSlots, cpuSlots := uint32(DefaultGPUSlots), uint32(DefaultCPUSlots)
	if slotsPerGPU > 0 {
		gpuSlots, cpuSlots = uint32(slotsPerGPU), uint32(slotsPerGPU)
	}
	cpu := []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: cpuSlots, Cpu: true}}
	if spec.Mode == ModeCPU {
		return cpu, nil
	}
	var found []Info
	var err error
	if d == nil {
		err = ErrNoDriver
	} else {
		found, err = d.Discover(ctx)
	}
	switch spec.Mode {
	case ModeAuto:
		if err != nil || len(found) == 0 {
			return cpu, nil
		}
		out := make([]*fleetv1.GPU, 0, len(found))
		for _, g := range found {
			out = append(out, gpu(g, gpuSlots))
		}
		return out, nil
	case ModeList:
		if err != nil {
			return nil, fmt.Errorf("--gpus %s: discover GPUs: %w", formatIndices(spec.Indices), err)
		}
		out := make([]*fleetv1.GPU, 0, len(spec.Indices))
		for _, i := range spec.Indices {
			k := slices.IndexFunc(found, func(g Info) bool { return g.Index == i })
			if k < 0 {
				return nil, fmt.Errorf("--gpus %s: GPU %d not found (this machine has %d)", formatIndices(spec.Indices), i, len(found))
			}
			out = append(out, gpu(found[k], gpuSlots))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown --gpus mode %d", spec.Mode)
}

func gpu(g Info, slots uint32) *fleetv1.GPU {
	return &fleetv1.GPU{Index: g.Index, Name: g.Name, MemoryBytes: g.MemoryBytes, Slots: slots}
}

func formatIndices(idx []uint32) string {
	parts := make([]string, len(idx))
	for i, n := range idx {
		parts[i] = strconv.FormatUint(uint64(n), 10)
	}
	return strings.Join(parts, ",")
}

// TotalSlots is the number of sessions the devices may hold at once.
func TotalSlots(devs []*fleetv1.GPU) int {
	n := 0
	for _, d := range devs {
		n += int(d.GetSlots())
	}
	return n
}
