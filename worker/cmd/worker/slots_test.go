package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/devices"
)

func TestParseSlotsPerGPU(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		env   map[string]string
		slots int
		auto  bool
		err   string // part of the usage error; "" for none
	}{
		{name: "default", slots: 0},
		{name: "count", args: []string{"--slots-per-gpu", "4"}, slots: 4},
		{name: "max", args: []string{"--slots-per-gpu", "256"}, slots: 256},
		{name: "auto", args: []string{"--slots-per-gpu", "auto"}, auto: true},
		{name: "auto any case, env", env: map[string]string{"AVATARFLEET_SLOTS_PER_GPU": "AUTO"}, auto: true},
		{name: "count after auto wins", args: []string{"--slots-per-gpu", "auto", "--slots-per-gpu", "3"}, slots: 3},
		{name: "flag wins over env", args: []string{"--slots-per-gpu", "auto"}, env: map[string]string{"AVATARFLEET_SLOTS_PER_GPU": "2"}, auto: true},
		{name: "word", args: []string{"--slots-per-gpu", "many"}, err: `"many": want auto or a count 1..256`},
		{name: "negative", args: []string{"--slots-per-gpu", "-1"}, err: "want auto or a count 1..256"},
		{name: "too many", args: []string{"--slots-per-gpu", "257"}, err: "257: want auto or a count 1..256"},
		{name: "empty", args: []string{"--slots-per-gpu", ""}, err: "want auto or a count"},
		{name: "fraction", args: []string{"--slots-per-gpu", "1.5"}, err: "want auto or a count"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, env(tt.env), host("node"), io.Discard)
			if tt.err != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "slots-per-gpu") {
					t.Fatalf("err = %v, want a usage error naming --slots-per-gpu and %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.slots != tt.slots || c.auto != tt.auto {
				t.Fatalf("slots %d auto %v, want %d %v", c.slots, c.auto, tt.slots, tt.auto)
			}
		})
	}
	// Config built in code: auto with a count is refused by Validate.
	var c Config
	c.AddFlags(flag.NewFlagSet("worker", flag.ContinueOnError))
	c.ID, c.SlotsAuto, c.SlotsPerGPU = "n", true, 2
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--slots-per-gpu") {
		t.Fatalf("Validate(auto and 2) = %v", err)
	}
}

// TestMeasureSlots runs --slots-per-gpu auto's measurement with the real
// default model on a CPU device and on a device claiming to be a GPU
// (with the CPU-only ONNX Runtime here it is timed on the CPU, and says
// so): each gets a measured count and its record.
func TestMeasureSlots(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := openEngine(t.Context(), mediaConfig{tts: ttsEspeak, prewarm: prewarmSlots, intraOpThreads: 1}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.close(); err != nil {
			t.Error(err)
		}
	}()
	for _, devs := range [][]*fleetv1.GPU{
		{{Index: 0, Name: "cpu", Slots: devices.DefaultCPUSlots, Cpu: true}},
		{{Index: 0, Name: "fake-gpu", Slots: devices.DefaultGPUSlots}},
	} {
		if err := e.measureSlots(t.Context(), devs, log); err != nil {
			t.Fatal(err)
		}
		d := devs[0]
		c := d.GetCapacity()
		if c.GetDevice() != "cpu" || len(c.GetTimings()) == 0 || c.GetBound() == "" || !strings.Contains(c.GetRule(), "cores") {
			t.Errorf("%s: capacity %v", d.GetName(), c)
		}
		if d.GetSlots() < 1 || d.GetSlots() > devices.MaxSlotsPerGPU {
			t.Errorf("%s: slots %d", d.GetName(), d.GetSlots())
		}
	}
	// A cancelled start fails the measurement and leaves the devices as
	// they were.
	devs := []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 2, Cpu: true}}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.measureSlots(ctx, devs, log); !errors.Is(err, context.Canceled) || devs[0].GetSlots() != 2 || devs[0].GetCapacity() != nil {
		t.Errorf("cancelled: err %v, device %v", err, devs[0])
	}
}
