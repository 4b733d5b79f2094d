package devices

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr bool
	}{
		{in: "", want: Spec{Mode: ModeAuto}},
		{in: "auto", want: Spec{Mode: ModeAuto}},
		{in: " AUTO ", want: Spec{Mode: ModeAuto}},
		{in: "cpu", want: Spec{Mode: ModeCPU}},
		{in: "Cpu", want: Spec{Mode: ModeCPU}},
		{in: "0", want: Spec{Mode: ModeList, Indices: []uint32{0}}},
		{in: "0,1", want: Spec{Mode: ModeList, Indices: []uint32{0, 1}}},
		{in: "3, 1 ,2", want: Spec{Mode: ModeList, Indices: []uint32{1, 2, 3}}},
		{in: "255", want: Spec{Mode: ModeList, Indices: []uint32{255}}},
		{in: "256", wantErr: true},
		{in: "0,0", wantErr: true},
		{in: "0,", wantErr: true},
		{in: ",", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "gpu0", wantErr: true},
		{in: "0;1", wantErr: true},
		{in: "1.5", wantErr: true},
		{in: "cpu,0", wantErr: true},
		{in: "99999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseSpec(%q) = %+v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.in, err)
			}
			if got.Mode != tt.want.Mode || !slices.Equal(got.Indices, tt.want.Indices) {
				t.Fatalf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

type fakeDiscoverer struct {
	infos []Info
	err   error
}

func (f fakeDiscoverer) Discover(context.Context) ([]Info, error) { return f.infos, f.err }

func TestResolve(t *testing.T) {
	twoGPUs := fakeDiscoverer{infos: []Info{
		{Index: 0, Name: "H100", MemoryBytes: 80 << 30},
		{Index: 1, Name: "H100", MemoryBytes: 80 << 30},
	}}
	noDriver := fakeDiscoverer{err: fmt.Errorf("nvml init: %w", ErrNoDriver)}
	cpu := func(slots uint32) []*fleetv1.GPU {
		return []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: slots, Cpu: true}}
	}
	tests := []struct {
		name    string
		spec    string
		slots   int
		disc    Discoverer
		want    []*fleetv1.GPU
		wantErr bool
	}{
		{name: "cpu default slots", spec: "cpu", disc: twoGPUs, want: cpu(DefaultCPUSlots)},
		{name: "cpu explicit slots", spec: "cpu", slots: 4, disc: nil, want: cpu(4)},
		{name: "auto without driver", spec: "auto", disc: noDriver, want: cpu(DefaultCPUSlots)},
		{name: "auto nil discoverer", spec: "auto", disc: nil, want: cpu(DefaultCPUSlots)},
		{name: "auto no GPUs", spec: "auto", disc: fakeDiscoverer{}, want: cpu(DefaultCPUSlots)},
		{name: "auto GPUs", spec: "auto", disc: twoGPUs, want: []*fleetv1.GPU{
			{Index: 0, Name: "H100", MemoryBytes: 80 << 30, Slots: DefaultGPUSlots},
			{Index: 1, Name: "H100", MemoryBytes: 80 << 30, Slots: DefaultGPUSlots},
		}},
		{name: "list subset", spec: "1", slots: 3, disc: twoGPUs, want: []*fleetv1.GPU{
			{Index: 1, Name: "H100", MemoryBytes: 80 << 30, Slots: 3},
		}},
		{name: "list missing index", spec: "0,2", disc: twoGPUs, wantErr: true},
		{name: "list without driver", spec: "0", disc: noDriver, wantErr: true},
		{name: "negative slots", spec: "cpu", slots: -1, wantErr: true},
		{name: "too many slots", spec: "cpu", slots: MaxSlotsPerGPU + 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := ParseSpec(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Resolve(t.Context(), spec, tt.slots, tt.disc)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Resolve = %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Resolve = %v, want %v", got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.GetIndex() != w.GetIndex() || g.GetName() != w.GetName() || g.GetMemoryBytes() != w.GetMemoryBytes() ||
					g.GetSlots() != w.GetSlots() || g.GetCpu() != w.GetCpu() {
					t.Fatalf("device %d = %v, want %v", i, g, w)
				}
			}
		})
	}
}

// TestNVMLNeverPanics runs real discovery: on a machine without a driver it
// must report ErrNoDriver, on a GPU machine it must list devices.
func TestNVMLNeverPanics(t *testing.T) {
	infos, err := NVML{}.Discover(t.Context())
	if err != nil {
		if !errors.Is(err, ErrNoDriver) {
			t.Logf("nvml error other than no-driver: %v", err)
		}
		t.Logf("no GPU here: %v", err)
		return
	}
	for _, g := range infos {
		if g.Name == "" {
			t.Errorf("GPU %d has no name", g.Index)
		}
		t.Logf("GPU %d: %s, %d bytes", g.Index, g.Name, g.MemoryBytes)
	}
	devs, err := Resolve(t.Context(), Spec{Mode: ModeAuto}, 0, NVML{})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) > 0 && devs[0].GetCpu() {
		t.Fatalf("auto chose the CPU on a machine with %d GPUs", len(infos))
	}
}

func TestTotalSlots(t *testing.T) {
	devs := []*fleetv1.GPU{{Slots: 2}, {Slots: 3}}
	if n := TotalSlots(devs); n != 5 {
		t.Fatalf("TotalSlots = %d, want 5", n)
	}
}
