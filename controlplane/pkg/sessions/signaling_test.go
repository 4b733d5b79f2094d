package sessions

import (
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestSignalingErrorPendingViewers(t *testing.T) {
	pending, err := status.New(codes.ResourceExhausted, "3 viewers connecting").
		WithDetails(&errdetails.ErrorInfo{Reason: pendingViewersReason, Domain: "avatarfleet"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := status.New(codes.ResourceExhausted, "x").WithDetails(&errdetails.ErrorInfo{Reason: "SOMETHING_ELSE"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"pending viewers", pending.Err(), ErrTooManyPending},
		{"room full", status.Error(codes.ResourceExhausted, "50 viewers"), ErrRoomFull},
		{"another reason", other.Err(), ErrRoomFull},
		{"bad SDP", status.Error(codes.InvalidArgument, "no"), ErrInvalidSDP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := signalingError("add viewer", tt.err)
			if !errors.Is(got, tt.want) {
				t.Fatalf("%v, want %v", got, tt.want)
			}
			if tt.want == ErrRoomFull && errors.Is(got, ErrTooManyPending) {
				t.Fatalf("%v is also ErrTooManyPending", got)
			}
		})
	}
	if n := clampCount(-3); n != 0 {
		t.Errorf("clampCount(-3) = %d", n)
	}
	if n := clampCount(1 << 30); n != 1<<16 {
		t.Errorf("clampCount(1<<30) = %d", n)
	}
}
