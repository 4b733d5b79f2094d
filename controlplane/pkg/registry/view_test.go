package registry

import (
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func TestWorkerViewServes(t *testing.T) {
	tests := []struct {
		names []string
		name  string
		want  bool
	}{
		{nil, "default", true},
		{nil, "", true},
		{nil, "anna", false},
		{[]string{"anna", "bob"}, "bob", true},
		{[]string{"anna"}, "default", false},
		{[]string{"anna"}, "", false},
	}
	for _, tt := range tests {
		v := WorkerView{Worker: &fleetv1.Worker{Avatars: tt.names, Voices: tt.names}}
		if got := v.ServesAvatar(tt.name); got != tt.want {
			t.Errorf("ServesAvatar(%q) with %v = %v, want %v", tt.name, tt.names, got, tt.want)
		}
		if got := v.ServesVoice(tt.name); got != tt.want {
			t.Errorf("ServesVoice(%q) with %v = %v, want %v", tt.name, tt.names, got, tt.want)
		}
	}
}

func TestWorkerViewTakesSessions(t *testing.T) {
	active := fleetv1.WorkerState_WORKER_STATE_ACTIVE
	tests := []struct {
		name string
		v    WorkerView
		want bool
	}{
		{"active", WorkerView{Worker: &fleetv1.Worker{State: active}}, true},
		{"drained by an admin", WorkerView{Worker: &fleetv1.Worker{State: active}, Drained: true}, false},
		{"draining itself", WorkerView{Worker: &fleetv1.Worker{State: fleetv1.WorkerState_WORKER_STATE_DRAINING}}, false},
		{"down", WorkerView{Worker: &fleetv1.Worker{State: active}, Down: true}, false},
		{"not active yet", WorkerView{Worker: &fleetv1.Worker{}}, false},
	}
	for _, tt := range tests {
		if got := tt.v.TakesSessions(); got != tt.want {
			t.Errorf("%s: TakesSessions = %v, want %v", tt.name, got, tt.want)
		}
	}
	v := WorkerView{Worker: &fleetv1.Worker{Gpus: []*fleetv1.GPU{{Index: 0, Slots: 3}, {Index: 1, Slots: 2}}}}
	if got := v.TotalSlots(); got != 5 {
		t.Errorf("TotalSlots = %d, want 5", got)
	}
}
