package server

import (
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Too many pending viewers is ResourceExhausted like a full room, told
// apart by its ErrorInfo reason.
func TestTooManyPendingStatus(t *testing.T) {
	s := &Server{}
	for _, tt := range []struct {
		err        error
		wantReason bool
	}{
		{fmt.Errorf("add viewer: %w", ErrTooManyPending), true},
		{fmt.Errorf("add viewer: %w", ErrRoomFull), false},
	} {
		st := status.Convert(s.toStatus(tt.err))
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("%v: code %s, want ResourceExhausted", tt.err, st.Code())
		}
		got := false
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == PendingViewersReason {
				got = true
			}
		}
		if got != tt.wantReason {
			t.Errorf("%v: PENDING_VIEWERS reason %v, want %v", tt.err, got, tt.wantReason)
		}
	}
}
