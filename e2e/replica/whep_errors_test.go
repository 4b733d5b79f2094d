package replica_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

// TestSignalingBadRequests: every refused WHEP/WHIP request gets its
// documented status and code, and none reaches the worker's SFU.
func TestSignalingBadRequests(t *testing.T) {
	sfu := testfleet.NewPionAnswerer(t)
	f := testfleet.Start(t, testfleet.Options{Replicas: 2, Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 4, Signaling: sfu}}})
	a := createSession(t, f, 0, testfleet.SessionsKey)
	b := createSession(t, f, 0, testfleet.SessionsKey)
	ended := createSession(t, f, 0, testfleet.SessionsKey)
	if r := f.MustDo(0, "DELETE", "/v1/sessions/"+ended.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete: %d", r.Status)
	}
	// A session whose placement is half done: reserved, never started.
	view, ok := f.Replicas[0].Registry().Worker("w")
	if !ok {
		t.Fatal("worker not in the registry")
	}
	starting := &fleetv1.Session{Id: "sess_starting", State: fleetv1.SessionState_SESSION_STATE_STARTING, CreatedAt: timestamppb.Now()}
	reserved := false
	for slot := uint32(0); slot < 4 && !reserved; slot++ { // some slots hold a and b
		_, ok, err := f.Store.Reserve(context.Background(), fleetstore.Reservation{Worker: "w", WorkerLease: view.Lease, WorkerRevision: view.Revision, Slot: slot}, starting)
		if err != nil {
			t.Fatalf("reserve: %v", err)
		}
		reserved = ok
	}
	if !reserved {
		t.Fatal("no slot reserved for the starting session")
	}

	now := tokenSigner(t, f, time.Now())
	expired := mustIssue(t, tokenSigner(t, f, time.Now().Add(-2*time.Hour)), a.ID)
	ancient := mustIssue(t, tokenSigner(t, f, time.Now().Add(-26*time.Hour)), a.ID)
	// A forgery naming the fleet's key id, one naming a key the fleet
	// does not list (never had, or removed), and a token of a key that
	// was listed but is no longer (its secret known to the attacker).
	otherKey := mustIssue(t, mustSigner(t, f.TokenKeys.Signing().ID, strings.Repeat("x", 32)), a.ID)
	unknownKid := mustIssue(t, mustSigner(t, "forged", strings.Repeat("x", 32)), a.ID)
	removedKey := mustIssue(t, mustSigner(t, "k-removed", strings.Repeat("r", 32)), a.ID, viewertoken.Subscribe, viewertoken.Publish)
	aPub := mustIssue(t, now, a.ID, viewertoken.Publish)
	aBoth := mustIssue(t, now, a.ID, viewertoken.Subscribe, viewertoken.Publish)
	_, offer := testfleet.NewPeer(t, testfleet.Viewer)
	_, whipOffer := testfleet.NewPeer(t, testfleet.Publisher)
	noMedia := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
	whep := func(id string) string { return "/v1/sessions/" + id + "/whep" }
	whip := func(id string) string { return "/v1/sessions/" + id + "/whip" }

	tests := []struct {
		name, method, path, token string
		body                      any
		headers                   []string
		status                    int
		code                      string
	}{
		{"token of another session", "POST", whep(b.ID), a.ViewerToken, offer, sdpHeader, 403, apiv1.CodeForbidden},
		{"expired token", "POST", whep(a.ID), expired, offer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"missing token", "POST", whep(a.ID), "", offer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"garbage token", "POST", whep(a.ID), "a.b.c", offer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"token signed with another key", "POST", whep(a.ID), otherKey, offer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"forged token with an unknown kid", "POST", whep(a.ID), unknownKid, offer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"token of a removed key", "POST", whep(a.ID), removedKey, offer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"WHIP token of a removed key", "POST", whip(a.ID), removedKey, whipOffer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"WHEP with a publish-only token", "POST", whep(a.ID), aPub, offer, sdpHeader, 403, apiv1.CodeForbidden},
		{"WHIP with the subscribe-only viewer token", "POST", whip(a.ID), a.ViewerToken, whipOffer, sdpHeader, 403, apiv1.CodeForbidden},
		{"WHIP with a subscribe-only token, bad body", "POST", whip(a.ID), a.ViewerToken, "hello", sdpHeader, 403, apiv1.CodeForbidden},
		{"DELETE publisher with the viewer token", "DELETE", whip(a.ID) + "/p_0123", a.ViewerToken, nil, nil, 403, apiv1.CodeForbidden},
		{"API key instead of a viewer token", "POST", whep(a.ID), testfleet.SessionsKey, offer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"JSON body", "POST", whep(a.ID), a.ViewerToken, `{"sdp":"v=0"}`, []string{"Content-Type", "application/json"}, 415, apiv1.CodeUnsupportedMediaType},
		{"no content type", "POST", whep(a.ID), a.ViewerToken, offer, nil, 415, apiv1.CodeUnsupportedMediaType},
		{"garbage SDP", "POST", whep(a.ID), a.ViewerToken, "hello, I am not an offer", sdpHeader, 400, apiv1.CodeInvalidSDP},
		{"empty SDP", "POST", whep(a.ID), a.ViewerToken, "", sdpHeader, 400, apiv1.CodeInvalidSDP},
		{"SDP without media", "POST", whep(a.ID), a.ViewerToken, noMedia, sdpHeader, 400, apiv1.CodeInvalidSDP},
		{"oversized offer", "POST", whep(a.ID), a.ViewerToken, offer + strings.Repeat("a=x-pad:0123456789\r\n", 4000), sdpHeader, 413, apiv1.CodePayloadTooLarge},
		{"unknown session", "POST", whep("sess_nope"), mustIssue(t, now, "sess_nope"), offer, sdpHeader, 404, apiv1.CodeNotFound},
		{"malformed session id", "POST", whep("a..b"), a.ViewerToken, offer, sdpHeader, 404, apiv1.CodeNotFound},
		{"ended session", "POST", whep(ended.ID), mustIssue(t, now, ended.ID), offer, sdpHeader, 404, apiv1.CodeNotFound},
		{"session not ready", "POST", whep(starting.Id), mustIssue(t, now, starting.Id), offer, sdpHeader, 409, apiv1.CodeSessionNotReady},
		{"WHIP with another session's token", "POST", whip(b.ID), aBoth, whipOffer, sdpHeader, 403, apiv1.CodeForbidden},
		{"WHIP expired token", "POST", whip(a.ID), expired, whipOffer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"WHIP missing token", "POST", whip(a.ID), "", whipOffer, sdpHeader, 401, apiv1.CodeUnauthorized},
		{"WHIP not SDP", "POST", whip(a.ID), aPub, whipOffer, []string{"Content-Type", "text/plain"}, 415, apiv1.CodeUnsupportedMediaType},
		{"WHIP garbage SDP", "POST", whip(a.ID), aPub, "v=0\r\nm=", sdpHeader, 400, apiv1.CodeInvalidSDP},
		{"WHIP session not ready", "POST", whip(starting.Id), mustIssue(t, now, starting.Id, viewertoken.Publish), whipOffer, sdpHeader, 409, apiv1.CodeSessionNotReady},
		{"DELETE without token", "DELETE", whep(a.ID) + "/v_0123", "", nil, nil, 401, apiv1.CodeUnauthorized},
		{"DELETE with a token expired past the grace", "DELETE", whep(a.ID) + "/v_0123", ancient, nil, nil, 401, apiv1.CodeUnauthorized},
		{"DELETE malformed viewer id", "DELETE", whep(a.ID) + "/v.0123", a.ViewerToken, nil, nil, 404, apiv1.CodeNotFound},
		{"DELETE viewer of a session not started", "DELETE", whep(starting.Id) + "/v_0123", mustIssue(t, now, starting.Id), nil, nil, 404, apiv1.CodeNotFound},
		{"DELETE of an unknown session", "DELETE", whip("sess_nope") + "/p_0123", mustIssue(t, now, "sess_nope", viewertoken.Publish), nil, nil, 404, apiv1.CodeNotFound},
		{"GET on the endpoint", "GET", whep(a.ID), a.ViewerToken, nil, nil, 405, apiv1.CodeMethodNotAllowed},
		{"PATCH on the endpoint", "PATCH", whip(a.ID), a.ViewerToken, nil, nil, 405, apiv1.CodeMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.MustDo(1, tt.method, tt.path, tt.token, tt.body, tt.headers...)
			if r.Status != tt.status || errorCode(t, r) != tt.code {
				t.Fatalf("%s %s: %d %s, want %d %s", tt.method, tt.path, r.Status, r.Body, tt.status, tt.code)
			}
			if tt.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if tt.status == 409 && r.Header.Get("Retry-After") == "" {
				t.Fatal("409 session_not_ready without Retry-After")
			}
		})
	}
	if st, err := sfu.Stats(a.ID); err != nil || len(st.GetViewers())+int(st.GetPublishers()) != 0 {
		t.Fatalf("a refused request reached the SFU: %v %v", st, err)
	}
	if rm := sfu.Removed(); len(rm) != 0 {
		t.Fatalf("a refused DELETE reached the SFU: %v", rm)
	}

	// Hanging up stays possible with a token past its TTL (within the grace)
	// and after the session ended (its room is gone: nothing to do).
	if r := f.MustDo(0, "DELETE", whep(a.ID)+"/v_0123", expired, nil); r.Status != 200 {
		t.Fatalf("DELETE with an expired token: %d %s", r.Status, r.Body)
	}
	if r := f.MustDo(0, "DELETE", whep(ended.ID)+"/v_0123", mustIssue(t, now, ended.ID), nil); r.Status != 200 {
		t.Fatalf("DELETE on an ended session: %d %s", r.Status, r.Body)
	}
	if rm := sfu.Removed(); len(rm) != 1 || rm[0] != "viewer/v_0123" {
		t.Fatalf("worker removals %v", rm)
	}
}

// TestSignalingWorkerErrors: the worker SFU's refusals come back as the
// documented HTTP errors; a worker without an SFU is 503.
func TestSignalingWorkerErrors(t *testing.T) {
	sfu := testfleet.NewPionAnswerer(t)
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 4, Signaling: sfu}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	pubTok := publishToken(t, f, 0, testfleet.SessionsKey, s.ID)
	_, offer := testfleet.NewPeer(t, testfleet.Viewer)
	_, whipOffer := testfleet.NewPeer(t, testfleet.Publisher)

	tests := []struct {
		name, proto string
		fail        error
		status      int
		code        string
		retryAfter  bool
	}{
		{"room full", "whep", fmt.Errorf("room of %s: %w", s.ID, server.ErrRoomFull), 503, apiv1.CodeNoCapacity, true},
		{"no room", "whep", fmt.Errorf("room of %s: %w", s.ID, server.ErrNoRoom), 404, apiv1.CodeNotFound, false},
		{"offer refused", "whep", fmt.Errorf("no common codec: %w", server.ErrInvalidSDP), 400, apiv1.CodeInvalidSDP, false},
		{"SFU bug", "whep", errors.New("sfu exploded"), 500, apiv1.CodeInternal, false},
		{"WHIP room full", "whip", fmt.Errorf("publisher: %w", server.ErrRoomFull), 503, apiv1.CodeNoCapacity, true},
		{"WHIP no room", "whip", server.ErrNoRoom, 404, apiv1.CodeNotFound, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sfu.FailWith(tt.fail)
			body, tok := offer, s.ViewerToken
			if tt.proto == "whip" {
				body, tok = whipOffer, pubTok
			}
			r := f.MustDo(0, "POST", "/v1/sessions/"+s.ID+"/"+tt.proto, tok, body, sdpHeader...)
			if r.Status != tt.status || errorCode(t, r) != tt.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tt.status, tt.code)
			}
			if got := r.Header.Get("Retry-After") != ""; got != tt.retryAfter {
				t.Fatalf("Retry-After %q, want present=%v", r.Header.Get("Retry-After"), tt.retryAfter)
			}
		})
	}
	sfu.FailWith(nil)

	// A worker without an SFU answers Unimplemented: 503 unavailable. Drain
	// w so the next session lands on the bare worker.
	f.StartWorker(testfleet.WorkerSpec{ID: "bare"})
	if r := f.MustDo(0, "POST", "/v1/workers/w/drain", testfleet.AdminKey, nil); r.Status != 202 {
		t.Fatalf("drain: %d %s", r.Status, r.Body)
	}
	f.Eventually(5*time.Second, "the replica sees w draining", func() bool {
		v, ok := f.Replicas[0].Registry().Worker("w")
		return ok && v.Draining()
	})
	bare := createSession(t, f, 0, testfleet.SessionsKey)
	if bare.WorkerID != "bare" {
		t.Fatalf("session placed on %q, want bare", bare.WorkerID)
	}
	for _, proto := range []string{"whep", "whip"} {
		body, tok := offer, bare.ViewerToken
		if proto == "whip" {
			body, tok = whipOffer, publishToken(t, f, 0, testfleet.SessionsKey, bare.ID)
		}
		r := f.MustDo(0, "POST", "/v1/sessions/"+bare.ID+"/"+proto, tok, body, sdpHeader...)
		if r.Status != 503 || errorCode(t, r) != apiv1.CodeUnavailable || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s to a worker without SFU: %d %s", proto, r.Status, r.Body)
		}
	}
	// Its sessions have no media figures: GET leaves stats out.
	if got := getSession(t, f, 0, bare.ID); got.Stats != nil {
		t.Fatalf("stats from a worker without SFU: %+v", got.Stats)
	}
}
