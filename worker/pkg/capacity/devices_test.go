package capacity

import (
	"context"
	"strings"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func TestApply(t *testing.T) {
	clock := &fakeClock{now: time.Unix(5000, 0)}
	opener := func(perFrame time.Duration) *fakeOpener {
		return &fakeOpener{clock: clock, perFrame: perFrame, runs: map[int]int{}}
	}
	cfg := Config{Cores: 8, IntraOpThreads: 1, Cap: 256, Measure: MeasureOptions{Now: clock.Now, Runs: 2}}
	for _, tc := range []struct {
		name    string
		devs    []*fleetv1.GPU
		targets map[uint32]Target
		slots   []uint32
		rule    []string
	}{
		{
			// 8 threads × 30 ms / (0.8 + 3.2) = 60.
			name:    "cpu device",
			devs:    []*fleetv1.GPU{{Index: 0, Name: "cpu", Cpu: true, Slots: 2}},
			targets: map[uint32]Target{0: {Opener: opener(800 * time.Microsecond), Device: "cpu", CPU: true}},
			slots:   []uint32{60},
			rule:    []string{"8 cores"},
		},
		{
			// Two GPUs without CUDA infer on the CPU: 4 threads each → 30.
			name: "gpus timed on the cpu split its threads",
			devs: []*fleetv1.GPU{{Index: 0, Slots: 1}, {Index: 1, Slots: 1}},
			targets: map[uint32]Target{
				0: {Opener: opener(800 * time.Microsecond), Device: "cpu", CPU: true},
				1: {Opener: opener(800 * time.Microsecond), Device: "cpu", CPU: true},
			},
			slots: []uint32{30, 30},
			rule:  []string{"4 cores", "4 cores"},
		},
		{
			// GPU 0: 30 / 0.5 = 60, but the host's CPU: 8 × 30 / 3.2 / 2 = 37.
			// GPU 1: 30 / 2 = 15.
			name: "two gpus share the host cpu",
			devs: []*fleetv1.GPU{{Index: 0, Slots: 1}, {Index: 1, Slots: 1}},
			targets: map[uint32]Target{
				0: {Opener: opener(500 * time.Microsecond), Device: "gpu0"},
				1: {Opener: opener(2 * time.Millisecond), Device: "gpu1"},
			},
			slots: []uint32{37, 15},
			rule:  []string{"/ 2 GPUs", "at batch 1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Apply(context.Background(), tc.devs, func(d *fleetv1.GPU) Target { return tc.targets[d.GetIndex()] }, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range tc.devs {
				c := d.GetCapacity()
				if d.GetSlots() != tc.slots[i] || c == nil || c.GetDevice() != tc.targets[d.GetIndex()].Device ||
					len(c.GetTimings()) != 4 || c.GetUtilisation() != DefaultUtilisation || c.GetPipelineCpuMs() != DefaultPipelineCPUMS ||
					!strings.Contains(c.GetRule(), tc.rule[i]) || c.GetMeasuredAt().AsTime().Before(time.Unix(5000, 0)) {
					t.Errorf("device %d: slots %d (want %d), capacity %v", i, d.GetSlots(), tc.slots[i], c)
				}
			}
		})
	}
}

// A failure on any device leaves every device as it was.
func TestApplyAllOrNothing(t *testing.T) {
	clock := &fakeClock{}
	devs := []*fleetv1.GPU{{Index: 0, Slots: 1}, {Index: 1, Slots: 1}}
	err := Apply(context.Background(), devs, func(d *fleetv1.GPU) Target {
		op := &fakeOpener{clock: clock, perFrame: time.Millisecond, runs: map[int]int{}}
		if d.GetIndex() == 1 {
			op.failAt = 1
		}
		return Target{Opener: op, Device: "gpu"}
	}, Config{Cores: 2, IntraOpThreads: 1, Cap: 16, Measure: MeasureOptions{Now: clock.Now}})
	if err == nil || !strings.Contains(err.Error(), "device 1") {
		t.Fatalf("err = %v", err)
	}
	for _, d := range devs {
		if d.GetSlots() != 1 || d.GetCapacity() != nil {
			t.Errorf("device changed: %v", d)
		}
	}
	if err := Apply(context.Background(), nil, nil, Config{}); err == nil {
		t.Error("no devices: nil error")
	}
}
