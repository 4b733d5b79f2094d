package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// TestToWorkerCapacity: a measured device's slot count and measurement
// reach the Worker JSON; a configured one has no "capacity" key.
func TestToWorkerCapacity(t *testing.T) {
	at := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	w := toWorker(registry.WorkerView{Worker: &fleetv1.Worker{Id: "w", Gpus: []*fleetv1.GPU{
		{Index: 0, Name: "cpu", Cpu: true, Slots: 15, Capacity: &fleetv1.Capacity{
			MeasuredAt: timestamppb.New(at), Took: durationpb.New(390 * time.Millisecond), Device: "cpu",
			Timings: []*fleetv1.BatchTiming{{Batch: 1, MsPerFrame: 0.575}, {Batch: 2, MsPerFrame: 0.57}},
			Batch:   1, Utilisation: 0.75, CpuThreads: 2, PipelineCpuMs: 3.2, Bound: "cpu", Rule: "min(…) = 15",
		}},
		{Index: 1, Name: "gpu", Slots: 3},
	}}, UsedPerGPU: map[uint32]int{0: 4}})
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		GPUs []map[string]json.RawMessage `json:"gpus"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.GPUs) != 2 {
		t.Fatalf("gpus %s", b)
	}
	if _, ok := got.GPUs[1]["capacity"]; ok {
		t.Errorf("configured GPU has a capacity: %s", b)
	}
	want := `{"measured_at":"2026-12-05T02:00:00Z","took_ms":390,"device":"cpu","timings":[{"batch":1,"ms_per_frame":0.575},{"batch":2,"ms_per_frame":0.57}],` +
		`"batch":1,"utilisation":0.75,"cpu_threads":2,"pipeline_cpu_ms":3.2,"bound":"cpu","rule":"min(…) = 15"}`
	if c := string(got.GPUs[0]["capacity"]); c != want {
		t.Errorf("capacity JSON\n got %s\nwant %s", c, want)
	}
	if !strings.Contains(string(b), `"slots":15,"used":4`) {
		t.Errorf("slots and used: %s", b)
	}
}
