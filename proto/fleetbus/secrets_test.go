package fleetbus

import (
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// TestSessionEventDropsLiveKitToken: a session event carries the LiveKit
// room's URL but never its access token, and leaves the record alone.
func TestSessionEventDropsLiveKitToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		lk   *fleetv1.LiveKitRoom
	}{
		{"no room", nil},
		{"room", &fleetv1.LiveKitRoom{Url: "wss://lk.example.com", Token: "a.b.c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fleetv1.Session{Id: "s1", Livekit: tc.lk}
			e := SessionEvent(SessionReady, s)
			if got := e.GetSession().GetLivekit().GetToken(); got != "" {
				t.Errorf("event holds the token %q", got)
			}
			if e.GetSession().GetLivekit().GetUrl() != tc.lk.GetUrl() {
				t.Errorf("event's url %q, want %q", e.GetSession().GetLivekit().GetUrl(), tc.lk.GetUrl())
			}
			if s.GetLivekit().GetToken() != tc.lk.GetToken() {
				t.Error("the record's token was changed")
			}
		})
	}
}
