package httpapi

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func TestValidateCreateRestartPolicy(t *testing.T) {
	n := func(v int) *int { return &v }
	tests := []struct {
		name        string
		req         apiv1.CreateSessionRequest
		wantPolicy  fleetv1.RestartPolicy
		wantTimeout uint32
		wantErr     bool
	}{
		{"defaults", apiv1.CreateSessionRequest{}, fleetv1.RestartPolicy_RESTART_POLICY_ON_WORKER_LOST, 60, false},
		{"never", apiv1.CreateSessionRequest{RestartPolicy: "never"}, fleetv1.RestartPolicy_RESTART_POLICY_NEVER, 60, false},
		{"explicit", apiv1.CreateSessionRequest{RestartPolicy: "on_worker_lost", ReplaceTimeoutSeconds: n(5)}, fleetv1.RestartPolicy_RESTART_POLICY_ON_WORKER_LOST, 5, false},
		{"max timeout", apiv1.CreateSessionRequest{ReplaceTimeoutSeconds: n(86400)}, fleetv1.RestartPolicy_RESTART_POLICY_ON_WORKER_LOST, 86400, false},
		{"unknown policy", apiv1.CreateSessionRequest{RestartPolicy: "always"}, 0, 0, true},
		{"zero timeout", apiv1.CreateSessionRequest{ReplaceTimeoutSeconds: n(0)}, 0, 0, true},
		{"timeout too long", apiv1.CreateSessionRequest{ReplaceTimeoutSeconds: n(86401)}, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ValidateCreate(tt.req)
			if tt.wantErr {
				var ae *apiError
				if !errors.As(err, &ae) || ae.code != apiv1.CodeInvalidRequest {
					t.Fatalf("err %v, want invalid_request", err)
				}
				return
			}
			if err != nil || p.RestartPolicy != tt.wantPolicy || p.ReplaceTimeoutSeconds != tt.wantTimeout {
				t.Fatalf("got %v %d %v, want %v %d", p.RestartPolicy, p.ReplaceTimeoutSeconds, err, tt.wantPolicy, tt.wantTimeout)
			}
		})
	}
}

func TestToSessionMoveFields(t *testing.T) {
	placed := timestamppb.Now()
	s := toSession(&fleetv1.Session{Id: "sess_1", State: fleetv1.SessionState_SESSION_STATE_READY, WorkerId: "w2",
		Moves: 2, MovedFrom: "w1", MoveReason: "worker_lost", PlacedAt: placed}, "http://cp")
	if s.RestartPolicy != "on_worker_lost" || s.ReplaceTimeoutSeconds != 60 || s.Moves != 2 || s.MovedFrom != "w1" ||
		s.MoveReason != "worker_lost" || s.PlacedAt == nil || !s.PlacedAt.Equal(placed.AsTime()) || s.LostAt != nil {
		t.Fatalf("moved session: %+v", s)
	}
	never := toSession(&fleetv1.Session{RestartPolicy: fleetv1.RestartPolicy_RESTART_POLICY_NEVER, ReplaceTimeoutSeconds: 7,
		State: fleetv1.SessionState_SESSION_STATE_PLACING, LostAt: placed}, "")
	if never.RestartPolicy != "never" || never.ReplaceTimeoutSeconds != 7 || never.LostAt == nil || never.State != "placing" {
		t.Fatalf("placing session: %+v", never)
	}
}
