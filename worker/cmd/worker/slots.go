package main

import (
	"context"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"strconv"
	"strings"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/capacity"
	"github.com/avatarfleet/avatarfleet/worker/pkg/devices"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

// slotsAuto is the --slots-per-gpu value that measures each device.
const slotsAuto = "auto"

// slotsFlag is --slots-per-gpu: "auto", or a count 1..MaxSlotsPerGPU
// (0 keeps the default).
type slotsFlag struct {
	n    *int
	auto *bool
}

func (f *slotsFlag) String() string {
	if f == nil || f.n == nil {
		return ""
	}
	if *f.auto {
		return slotsAuto
	}
	if *f.n == 0 {
		return ""
	}
	return strconv.Itoa(*f.n)
}

func (f *slotsFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, slotsAuto) {
		*f.n, *f.auto = 0, true
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q: want auto or a count 1..%d", s, devices.MaxSlotsPerGPU)
	}
	if n < 0 || n > devices.MaxSlotsPerGPU {
		return fmt.Errorf("%d: want auto or a count 1..%d (0 for the default)", n, devices.MaxSlotsPerGPU)
	}
	*f.n, *f.auto = n, false
	return nil
}

// measureSlots is --slots-per-gpu auto: it times the lip-sync model on
// each device (on its GPU when ONNX Runtime has the CUDA provider, else on
// the CPU) and sets each device's slots and capacity record, which the
// registration then advertises. The CPU threads counted are GOMAXPROCS
// (the cgroup's CPU limit where there is one).
func (e *engine) measureSlots(ctx context.Context, devs []*fleetv1.GPU, log *slog.Logger) error {
	onGPU := e.cudaDevices(devs, log)
	threads := e.cfg.intraOpThreads
	err := capacity.Apply(ctx, devs, func(d *fleetv1.GPU) capacity.Target {
		dev := inference.CPU()
		if onGPU[d.GetIndex()] {
			dev = inference.GPU(int(d.GetIndex()))
		}
		return capacity.Target{
			Opener: capacity.ModelOpener{Model: e.model, Device: dev, IntraOpThreads: threads},
			Device: dev.String(),
			CPU:    !dev.GPU,
		}
	}, capacity.Config{Cores: goruntime.GOMAXPROCS(0), IntraOpThreads: threads, Cap: devices.MaxSlotsPerGPU})
	if err != nil {
		return fmt.Errorf("--slots-per-gpu auto: %w", err)
	}
	for _, d := range devs {
		c := d.GetCapacity()
		log.Info("slots measured", "index", d.GetIndex(), "device", c.GetDevice(), "slots", d.GetSlots(),
			"bound", c.GetBound(), "took", c.GetTook().AsDuration(), "rule", c.GetRule())
	}
	return nil
}
