package supervisor

import (
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func TestWantsMigration(t *testing.T) {
	active, draining := fleetv1.WorkerState_WORKER_STATE_ACTIVE, fleetv1.WorkerState_WORKER_STATE_DRAINING
	tests := []struct {
		name string
		v    registry.WorkerView
		want bool
	}{
		{"active", registry.WorkerView{Worker: &fleetv1.Worker{State: active}}, false},
		{"drained by an admin", registry.WorkerView{Worker: &fleetv1.Worker{State: active}, Drained: true}, false},
		{"drained with migrate", registry.WorkerView{Worker: &fleetv1.Worker{State: active}, Drained: true, Migrate: true}, true},
		{"draining itself", registry.WorkerView{Worker: &fleetv1.Worker{State: draining}}, false},
		{"draining itself with migrate", registry.WorkerView{Worker: &fleetv1.Worker{State: draining, Migrate: true}}, true},
		{"down: re-placement's business", registry.WorkerView{Worker: &fleetv1.Worker{State: draining, Migrate: true}, Down: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wantsMigration(tt.v); got != tt.want {
				t.Fatalf("wantsMigration = %v, want %v", got, tt.want)
			}
		})
	}
}
