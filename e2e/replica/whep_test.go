package replica_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

var sdpHeader = []string{"Content-Type", "application/sdp"}

// testICEServers are what the test SFU advertises: they must come back as
// Link headers (nobody contacts them).
var testICEServers = []*fleetv1.IceServer{
	{Urls: []string{"stun:stun.example.net:3478"}},
	{Urls: []string{"turn:turn.example.net:3478?transport=udp", "turns:turn.example.net:5349"}, Username: "user", Credential: `pa"ss`},
}

var wantLinks = []string{
	`<stun:stun.example.net:3478>; rel="ice-server"`,
	`<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="user"; credential="pa\"ss"; credential-type="password"`,
	`<turns:turn.example.net:5349>; rel="ice-server"; username="user"; credential="pa\"ss"; credential-type="password"`,
}

// tokenSigner signs viewer tokens with the fleet's keys at a chosen time.
func tokenSigner(t *testing.T, f *testfleet.Fleet, at time.Time) *viewertoken.Signer {
	t.Helper()
	s, err := viewertoken.NewSigner(f.TokenKeys, time.Hour, viewertoken.WithClock(func() time.Time { return at }))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mustIssue makes a token of session with grants (subscribe when none).
func mustIssue(t *testing.T, s *viewertoken.Signer, session string, grants ...viewertoken.Grant) string {
	t.Helper()
	if len(grants) == 0 {
		grants = []viewertoken.Grant{viewertoken.Subscribe}
	}
	tok, _, err := s.IssueGrants(session, grants, s.TTL())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// publishToken asks the tokens endpoint of replica i for a publish token.
func publishToken(t *testing.T, f *testfleet.Fleet, i int, key, session string) string {
	t.Helper()
	r := f.MustDo(i, "POST", "/v1/sessions/"+session+"/tokens", key, apiv1.CreateTokenRequest{Grants: []string{"publish"}})
	if r.Status != 201 {
		t.Fatalf("tokens: %d %s", r.Status, r.Body)
	}
	var tok apiv1.Token
	r.JSON(t, &tok)
	return tok.Token
}

func errorCode(t *testing.T, r testfleet.Response) string {
	t.Helper()
	var body apiv1.ErrorBody
	r.JSON(t, &body)
	return body.Error.Code
}

// TestWHEPViewer: a viewer's offer posted to replica 1 for a session placed
// through replica 0 reaches the worker's SFU; the answer connects a real
// peer; stats show the viewer; DELETE reaches the worker; PATCH is refused.
func TestWHEPViewer(t *testing.T) {
	sfu := testfleet.NewPionAnswerer(t, testICEServers...)
	f := testfleet.Start(t, testfleet.Options{Replicas: 2, Workers: []testfleet.WorkerSpec{{ID: "w", Signaling: sfu}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	if s.State != apiv1.StateReady || s.ViewerToken == "" || !strings.HasSuffix(s.WHEPURL, "/v1/sessions/"+s.ID+"/whep") {
		t.Fatalf("session %+v", s)
	}

	viewer, offer := testfleet.NewPeer(t, testfleet.Viewer)
	r := f.MustDo(1, "POST", "/v1/sessions/"+s.ID+"/whep", s.ViewerToken, offer, sdpHeader...)
	if r.Status != 201 {
		t.Fatalf("WHEP offer: %d %s", r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	if !regexp.MustCompile(`^/v1/sessions/` + s.ID + `/whep/v_[0-9a-f]{16}$`).MatchString(loc) {
		t.Fatalf("Location %q", loc)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Fatalf("Content-Type %q", ct)
	}
	if links := r.Header.Values("Link"); !slices.Equal(links, wantLinks) {
		t.Fatalf("Link headers:\n%s\nwant:\n%s", strings.Join(links, "\n"), strings.Join(wantLinks, "\n"))
	}
	viewer.Accept(t, string(r.Body))
	viewerID := loc[strings.LastIndex(loc, "/")+1:]
	f.Eventually(10*time.Second, "the worker's peer connects", func() bool { return sfu.PeerState(viewerID) == "connected" })

	// Stats, through the other replica, while the viewer is connected.
	got := getSession(t, f, 0, s.ID)
	if got.Stats == nil || len(got.Stats.Viewers) != 1 || got.Stats.Viewers[0].ID != viewerID ||
		got.Stats.Viewers[0].State != "connected" || got.Stats.Viewers[0].ConnectedAt == nil {
		t.Fatalf("stats %+v", got.Stats)
	}

	if r := f.MustDo(0, "PATCH", loc, s.ViewerToken, "a=end-of-candidates\r\n", "Content-Type", "application/trickle-ice-sdpfrag"); r.Status != 405 ||
		r.Header.Get("Allow") != "DELETE" || errorCode(t, r) != apiv1.CodeMethodNotAllowed {
		t.Fatalf("PATCH: %d Allow=%q %s", r.Status, r.Header.Get("Allow"), r.Body)
	}
	if r := f.MustDo(0, "OPTIONS", "/v1/sessions/"+s.ID+"/whep", "", nil); r.Status != 204 || r.Header.Get("Accept-Post") != "application/sdp" {
		t.Fatalf("OPTIONS: %d Accept-Post=%q", r.Status, r.Header.Get("Accept-Post"))
	}
	other := createSession(t, f, 0, testfleet.SessionsKey)
	if r := f.MustDo(0, "DELETE", loc, other.ViewerToken, nil); r.Status != 403 {
		t.Fatalf("DELETE with another session's token: %d %s", r.Status, r.Body)
	}
	if len(sfu.Removed()) != 0 {
		t.Fatalf("refused DELETE reached the worker: %v", sfu.Removed())
	}
	if r := f.MustDo(0, "DELETE", loc, s.ViewerToken, nil); r.Status != 200 {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	if rm := sfu.Removed(); !slices.Equal(rm, []string{"viewer/" + viewerID}) {
		t.Fatalf("worker removals %v", rm)
	}
	if st := sfu.PeerState(viewerID); st != "" {
		t.Fatalf("worker still holds the viewer (%s)", st)
	}
	if got := getSession(t, f, 1, s.ID); got.Stats == nil || len(got.Stats.Viewers) != 0 {
		t.Fatalf("stats after DELETE %+v", got.Stats)
	}

	metrics := string(f.MustDo(1, "GET", "/metrics", "", nil).Body)
	if !strings.Contains(metrics, `avatarfleet_signaling_requests_total{op="offer",protocol="whep",result="created"} 1`) {
		t.Fatalf("metrics lack the WHEP offer:\n%s", grepLines(metrics, "avatarfleet_signaling"))
	}
}

// TestWHIPPublisher: a publisher's sendonly audio offer is answered by the
// worker, connects, counts in the stats, and DELETE ends it.
func TestWHIPPublisher(t *testing.T) {
	sfu := testfleet.NewPionAnswerer(t)
	f := testfleet.Start(t, testfleet.Options{Replicas: 2, Workers: []testfleet.WorkerSpec{{ID: "w", Signaling: sfu}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)

	pub, offer := testfleet.NewPeer(t, testfleet.Publisher)
	// The Session's viewer token only subscribes: WHIP refuses it.
	r := f.MustDo(1, "POST", "/v1/sessions/"+s.ID+"/whip", s.ViewerToken, offer, sdpHeader...)
	if r.Status != 403 || errorCode(t, r) != apiv1.CodeForbidden {
		t.Fatalf("WHIP offer with the subscribe-only viewer token: %d %s", r.Status, r.Body)
	}
	pubTok := publishToken(t, f, 0, testfleet.SessionsKey, s.ID)
	r = f.MustDo(1, "POST", "/v1/sessions/"+s.ID+"/whip", pubTok, offer, sdpHeader...)
	if r.Status != 201 {
		t.Fatalf("WHIP offer with a publish token: %d %s", r.Status, r.Body)
	}
	loc := r.Header.Get("Location")
	if !regexp.MustCompile(`^/v1/sessions/` + s.ID + `/whip/p_[0-9a-f]{16}$`).MatchString(loc) {
		t.Fatalf("Location %q", loc)
	}
	if len(r.Header.Values("Link")) != 0 {
		t.Fatalf("Link headers without ICE servers: %q", r.Header.Values("Link"))
	}
	pub.Accept(t, string(r.Body))
	if got := getSession(t, f, 0, s.ID); got.Stats == nil || got.Stats.Publishers != 1 {
		t.Fatalf("stats %+v", got.Stats)
	}
	if r := f.MustDo(0, "PATCH", loc, pubTok, "x", "Content-Type", "application/trickle-ice-sdpfrag"); r.Status != 405 || r.Header.Get("Allow") != "DELETE" {
		t.Fatalf("PATCH: %d Allow=%q", r.Status, r.Header.Get("Allow"))
	}
	// A viewer's offer (receive only) is no WHIP offer; a publisher's is no
	// WHEP offer.
	_, viewerOffer := testfleet.NewPeer(t, testfleet.Viewer)
	if r := f.MustDo(0, "POST", "/v1/sessions/"+s.ID+"/whip", pubTok, viewerOffer, sdpHeader...); r.Status != 400 || errorCode(t, r) != apiv1.CodeInvalidSDP {
		t.Fatalf("recvonly offer to WHIP: %d %s", r.Status, r.Body)
	}
	if r := f.MustDo(0, "POST", "/v1/sessions/"+s.ID+"/whep", s.ViewerToken, offer, sdpHeader...); r.Status != 400 || errorCode(t, r) != apiv1.CodeInvalidSDP {
		t.Fatalf("sendonly offer to WHEP: %d %s", r.Status, r.Body)
	}
	// Nor may a viewer hang up the publisher.
	if r := f.MustDo(1, "DELETE", loc, s.ViewerToken, nil); r.Status != 403 {
		t.Fatalf("DELETE with the viewer token: %d %s", r.Status, r.Body)
	}
	if r := f.MustDo(1, "DELETE", loc, pubTok, nil); r.Status != 200 {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	if rm := sfu.Removed(); !slices.Equal(rm, []string{"publisher/" + id}) {
		t.Fatalf("worker removals %v", rm)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// mustSigner is a signer of one key: id and secret chosen by the test.
func mustSigner(t *testing.T, id, secret string) *viewertoken.Signer {
	t.Helper()
	ks, err := viewertoken.NewKeySet(viewertoken.Key{ID: id, Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := viewertoken.NewSigner(ks, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
