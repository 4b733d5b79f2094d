package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

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

// TestLiveKitLiveState: GET /v1/sessions/{id}'s Session shows the worker's
// live room connection when it answered (reconnecting, left while the
// session lives on, with reconnects and the last reason), and today's
// state from the session's own when it did not; a worker's unknown state
// or oversized reason is not passed on as is.
func TestLiveKitLiveState(t *testing.T) {
	ready := &fleetv1.Session{Id: "sess_1", State: fleetv1.SessionState_SESSION_STATE_READY,
		Livekit: &fleetv1.LiveKitRoom{Url: "wss://agents.example.com", Token: testJWT()}}
	long := strings.Repeat("é", 300)
	for _, tc := range []struct {
		name   string
		sess   *fleetv1.Session
		status *fleetv1.SessionStatusResponse
		want   string // the livekit object's JSON
	}{
		{"no answer", ready, nil, `{"url":"wss://agents.example.com","state":"joined"}`},
		{"answer without livekit", ready, &fleetv1.SessionStatusResponse{}, `{"url":"wss://agents.example.com","state":"joined"}`},
		{"joined", ready, &fleetv1.SessionStatusResponse{Livekit: &fleetv1.LiveKitStatus{State: "joined"}},
			`{"url":"wss://agents.example.com","state":"joined","reconnects":0}`},
		{"reconnecting", ready, &fleetv1.SessionStatusResponse{Livekit: &fleetv1.LiveKitStatus{State: "reconnecting", Reconnects: 2, LastError: "connection to the LiveKit server lost"}},
			`{"url":"wss://agents.example.com","state":"reconnecting","reconnects":2,"last_error":"connection to the LiveKit server lost"}`},
		{"left, session alive", ready, &fleetv1.SessionStatusResponse{Livekit: &fleetv1.LiveKitStatus{State: "left", LastError: "duplicate identity"}},
			`{"url":"wss://agents.example.com","state":"left","reconnects":0,"last_error":"duplicate identity"}`},
		{"unknown state", ready, &fleetv1.SessionStatusResponse{Livekit: &fleetv1.LiveKitStatus{State: "dancing", Reconnects: 1}},
			`{"url":"wss://agents.example.com","state":"joined"}`},
		{"no room", &fleetv1.Session{Id: "sess_2", State: fleetv1.SessionState_SESSION_STATE_READY},
			&fleetv1.SessionStatusResponse{Livekit: &fleetv1.LiveKitStatus{State: "joined"}}, `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := toSession(tc.sess, "http://cp")
			withLiveStatus(&out, tc.status)
			b, err := json.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				LiveKit json.RawMessage `json:"livekit"`
			}
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatal(err)
			}
			if got := string(body.LiveKit); got != tc.want && !(tc.want == "null" && got == "") {
				t.Errorf("livekit %s, want %s", got, tc.want)
			}
		})
	}
	out := toSession(ready, "http://cp")
	withLiveStatus(&out, &fleetv1.SessionStatusResponse{Livekit: &fleetv1.LiveKitStatus{State: "left", LastError: long + "\xff"}})
	if e := out.LiveKit.LastError; len(e) > maxLiveKitError || !utf8.ValidString(e) || e == "" {
		t.Errorf("last_error of %d bytes (valid UTF-8 %v)", len(e), utf8.ValidString(e))
	}
	// The media figures come from the same answer.
	withLiveStatus(&out, &fleetv1.SessionStatusResponse{Stats: &fleetv1.SessionStats{VideoFramesSent: 7}})
	if out.Stats == nil || out.Stats.VideoFramesSent != 7 {
		t.Errorf("stats %+v, want the worker's", out.Stats)
	}
}
