package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func testJWT() string {
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + e([]byte(`{"sub":"avatar-1","kind":"agent"}`)) + "." + e([]byte("sig"))
}

// TestValidateCreateLiveKit: a create's livekit room is checked (URL
// scheme and length, a JWT-shaped token of bounded size) and carried to the
// record; a bad one is 400 invalid_livekit, whose message never holds the
// token.
func TestValidateCreateLiveKit(t *testing.T) {
	tok := testJWT()
	for _, tc := range []struct {
		name    string
		lk      *apiv1.LiveKitJoin
		wantErr bool
	}{
		{"none", nil, false},
		{"wss", &apiv1.LiveKitJoin{URL: "wss://agents.example.com", Token: tok}, false},
		{"http", &apiv1.LiveKitJoin{URL: "http://127.0.0.1:7880", Token: tok}, false},
		{"ftp", &apiv1.LiveKitJoin{URL: "ftp://agents.example.com", Token: tok}, true},
		{"no url", &apiv1.LiveKitJoin{Token: tok}, true},
		{"long url", &apiv1.LiveKitJoin{URL: "wss://a.example.com/" + strings.Repeat("x", 2048), Token: tok}, true},
		{"no token", &apiv1.LiveKitJoin{URL: "wss://agents.example.com"}, true},
		{"not a JWT", &apiv1.LiveKitJoin{URL: "wss://agents.example.com", Token: "secret-but-not-a-jwt"}, true},
		{"long token", &apiv1.LiveKitJoin{URL: "wss://agents.example.com", Token: tok + strings.Repeat("A", 4096)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ValidateCreate(apiv1.CreateSessionRequest{LiveKit: tc.lk})
			if tc.wantErr {
				var ae *apiError
				if !errors.As(err, &ae) || ae.code != apiv1.CodeInvalidLiveKit {
					t.Fatalf("err %v, want invalid_livekit", err)
				}
				if tc.lk.Token != "" && strings.Contains(err.Error(), tc.lk.Token) {
					t.Errorf("error %q holds the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.LiveKit.GetUrl() != tc.lk.GetURL() || p.LiveKit.GetToken() != tc.lk.GetToken() {
				t.Errorf("params' livekit %v, want %+v", p.LiveKit, tc.lk)
			}
		})
	}
	// Another token is another request for an idempotency key.
	a, _ := ValidateCreate(apiv1.CreateSessionRequest{LiveKit: &apiv1.LiveKitJoin{URL: "wss://a.example.com", Token: tok}})
	b, _ := ValidateCreate(apiv1.CreateSessionRequest{LiveKit: &apiv1.LiveKitJoin{URL: "wss://a.example.com", Token: tok + "x"}})
	if requestHash(a) == requestHash(b) {
		t.Error("two tokens give the same request hash")
	}
}

// TestToSessionLiveKit: a session shows its LiveKit room's URL and a state
// from its own, never the token.
func TestToSessionLiveKit(t *testing.T) {
	tok := testJWT()
	for _, tc := range []struct {
		state fleetv1.SessionState
		want  string
	}{
		{fleetv1.SessionState_SESSION_STATE_STARTING, apiv1.LiveKitJoining},
		{fleetv1.SessionState_SESSION_STATE_PLACING, apiv1.LiveKitJoining},
		{fleetv1.SessionState_SESSION_STATE_READY, apiv1.LiveKitJoined},
		{fleetv1.SessionState_SESSION_STATE_ENDED, apiv1.LiveKitLeft},
		{fleetv1.SessionState_SESSION_STATE_FAILED, apiv1.LiveKitLeft},
	} {
		s := toSession(&fleetv1.Session{Id: "sess_1", State: tc.state,
			Livekit: &fleetv1.LiveKitRoom{Url: "wss://agents.example.com", Token: tok}}, "http://cp")
		if s.LiveKit == nil || s.LiveKit.URL != "wss://agents.example.com" || s.LiveKit.State != tc.want {
			t.Errorf("%v: livekit %+v, want state %s", tc.state, s.LiveKit, tc.want)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), tok) {
			t.Errorf("the response holds the token: %s", b)
		}
	}
	if s := toSession(&fleetv1.Session{Id: "sess_2"}, ""); s.LiveKit != nil {
		t.Errorf("a session without a room shows %+v", s.LiveKit)
	}
}
