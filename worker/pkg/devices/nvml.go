package devices

import (
	"context"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML discovers GPUs through the NVIDIA driver's NVML library, loaded at
// run time (dlopen), so the binary runs on machines without a driver.
type NVML struct{}

// Discover implements Discoverer. Without a loadable driver it returns an
// error wrapping ErrNoDriver.
func (NVML) Discover(ctx context.Context) (infos []Info, err error) {
	// A broken driver install must not take the worker down: treat a panic
	// inside the cgo binding like a missing driver.
	defer func() {
		if r := recover(); r != nil {
			infos, err = nil, fmt.Errorf("nvml panicked: %v: %w", r, ErrNoDriver)
		}
	}()
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml init: %s: %w", lib.ErrorString(ret), ErrNoDriver)
	}
	defer lib.Shutdown()
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %s", lib.ErrorString(ret))
	}
	for i := range count {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("nvml discovery: %w", err)
		}
		dev, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml device %d: %s", i, lib.ErrorString(ret))
		}
		info := Info{Index: uint32(i), Name: fmt.Sprintf("gpu%d", i)}
		if name, ret := dev.GetName(); ret == nvml.SUCCESS {
			info.Name = name
		}
		if mem, ret := dev.GetMemoryInfo(); ret == nvml.SUCCESS {
			info.MemoryBytes = mem.Total
		}
		infos = append(infos, info)
	}
	return infos, nil
}
