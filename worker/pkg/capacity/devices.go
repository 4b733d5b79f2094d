package capacity

import (
	"context"
	"errors"
	"fmt"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config is how Apply measures and counts.
type Config struct {
	// Cores is the host's CPU threads the worker may use (GOMAXPROCS).
	Cores int
	// IntraOpThreads is ONNX Runtime's intra-op threads per session.
	IntraOpThreads int
	// PipelineCPUMS is the CPU per session and frame outside inference
	// (0: DefaultPipelineCPUMS).
	PipelineCPUMS float64
	// Utilisation (0: DefaultUtilisation).
	Utilisation float64
	// Cap is the most slots per device.
	Cap int
	// Measure bounds each device's measurement.
	Measure MeasureOptions
}

// Target is one device to measure: how to open the model there and the
// name of where it runs ("cpu", "gpu0"). CPU is true when inference runs
// on the host's CPU (the CPU device, or a GPU without a CUDA provider).
type Target struct {
	Opener Opener
	Device string
	CPU    bool
}

// Apply measures each device (targetOf names how) and sets its Slots and
// Capacity. Devices inferring on the CPU (the CPU device, or GPUs without
// a CUDA provider) split the host's threads between them. It changes
// nothing unless every device succeeds.
func Apply(ctx context.Context, devs []*fleetv1.GPU, targetOf func(*fleetv1.GPU) Target, cfg Config) error {
	if cfg.PipelineCPUMS == 0 {
		cfg.PipelineCPUMS = DefaultPipelineCPUMS
	}
	if cfg.Utilisation == 0 {
		cfg.Utilisation = DefaultUtilisation
	}
	if len(devs) == 0 {
		return errors.New("capacity: no devices")
	}
	// Devices that infer on the CPU share the host's threads; GPUs share
	// it for the rest of their sessions' pipelines.
	targets := make([]Target, len(devs))
	onCPU, gpus := 0, 0
	for i, d := range devs {
		targets[i] = targetOf(d)
		if targets[i].CPU {
			onCPU++
		} else {
			gpus++
		}
	}
	caps := make([]*fleetv1.Capacity, len(devs))
	slots := make([]uint32, len(devs))
	for i, d := range devs {
		t := targets[i]
		m, err := Measure(ctx, t.Opener, cfg.Measure)
		if err != nil {
			return fmt.Errorf("device %d (%s): %w", d.GetIndex(), t.Device, err)
		}
		in := Input{
			Timing: m.Timing, CPU: t.CPU, Cores: cfg.Cores, IntraOpThreads: cfg.IntraOpThreads,
			PipelineCPUMS: cfg.PipelineCPUMS, Utilisation: cfg.Utilisation, Cap: cfg.Cap,
			MemoryBytes: 0, SessionBytes: 0, // per-session device memory is not measured yet
		}
		if t.CPU {
			in.Cores = max(1, cfg.Cores/onCPU)
		} else {
			in.GPUs = gpus
		}
		res, err := Slots(in)
		if err != nil {
			return fmt.Errorf("device %d (%s): %w", d.GetIndex(), t.Device, err)
		}
		slots[i] = uint32(res.Slots)
		caps[i] = Record(m, t.Device, in, res)
	}
	for i, d := range devs {
		d.Slots, d.Capacity = slots[i], caps[i]
	}
	return nil
}

// Record is the worker-record form of a measurement and its result.
func Record(m Measurement, device string, in Input, res Result) *fleetv1.Capacity {
	c := &fleetv1.Capacity{
		MeasuredAt:    timestamppb.New(m.MeasuredAt.UTC().Truncate(time.Millisecond)),
		Took:          durationpb.New(m.Took),
		Device:        device,
		Batch:         uint32(res.Batch),
		Utilisation:   in.Utilisation,
		CpuThreads:    uint32(in.Cores),
		PipelineCpuMs: in.PipelineCPUMS,
		Bound:         res.Bound,
		Rule:          res.Rule,
	}
	for _, t := range m.Timing {
		c.Timings = append(c.Timings, &fleetv1.BatchTiming{Batch: uint32(t.Batch), MsPerFrame: t.MSPerFrame})
	}
	return c
}
