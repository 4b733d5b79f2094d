package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// WHEP (draft-ietf-wish-whep) and WHIP (RFC 9725) signaling. A browser
// authenticates with a session token, not an API key: WHEP needs the
// subscribe grant (the Session's viewer_token has it), WHIP the publish
// grant (from POST /v1/sessions/{id}/tokens only). The offer
// is checked here and forwarded to the worker hosting the session, whose
// embedded SFU answers. Trickle ICE and ICE restarts (PATCH) are not
// supported: the answer carries every candidate of the worker.

// hangUpGrace is how long past its expiry a viewer token still ends its
// viewer or publisher (DELETE): a viewer who watched for longer than the
// token's TTL can still leave. It is the longest a session may live.
const hangUpGrace = maxMaxDuration * time.Second

// Retry-After hints of signaling errors.
const (
	notReadyRetry = time.Second
	pendingRetry  = 2 * time.Second
	roomFullRetry = 5 * time.Second
	noMediaRetry  = 5 * time.Second
)

// signalingKind is WHEP or WHIP: the same resource shapes, different calls.
type signalingKind struct {
	proto  string // path segment and metrics label: whep, whip
	grant  viewertoken.Grant
	offer  offerKind
	add    func(ctx context.Context, sess *fleetv1.Session, offer string, vp sessions.ViewerParams) (sessions.Answer, error)
	remove func(ctx context.Context, sess *fleetv1.Session, peerID string) error
}

// signalingMetrics counts WHEP/WHIP requests by outcome.
type signalingMetrics struct {
	requests *prometheus.CounterVec
}

func newSignalingMetrics(reg prometheus.Registerer) *signalingMetrics {
	m := &signalingMetrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "avatarfleet_signaling_requests_total",
		Help: "WHEP/WHIP requests by protocol (whep, whip), operation (offer, delete, patch) and result (created, deleted, or the error code).",
	}, []string{"protocol", "op", "result"})}
	if reg != nil {
		reg.MustRegister(m.requests)
	}
	return m
}

func (m *signalingMetrics) observe(proto, op string, err error) {
	result := "ok"
	switch {
	case err == nil && op == "offer":
		result = "created"
	case err == nil && op == "delete":
		result = "deleted"
	case err != nil:
		result = apiv1.CodeInternal
		var ae *apiError
		if errors.As(err, &ae) {
			result = ae.code
		}
	}
	m.requests.WithLabelValues(proto, op, result).Inc()
}

func (a *API) signalingRoutes() {
	kinds := []signalingKind{
		{proto: "whep", grant: viewertoken.Subscribe, offer: viewerOffer, add: a.opts.Sessions.AddViewer, remove: a.opts.Sessions.RemoveViewer},
		{proto: "whip", grant: viewertoken.Publish, offer: publisherOffer, add: func(ctx context.Context, sess *fleetv1.Session, offer string, _ sessions.ViewerParams) (sessions.Answer, error) {
			return a.opts.Sessions.AddPublisher(ctx, sess, offer)
		}, remove: a.opts.Sessions.RemovePublisher},
	}
	for _, k := range kinds {
		endpoint := "/v1/sessions/{id}/" + k.proto
		resource := endpoint + "/{peer}"
		a.signal("POST "+endpoint, k.proto, "offer", func(w http.ResponseWriter, r *http.Request) error { return a.offer(w, r, k) })
		a.signal("DELETE "+resource, k.proto, "delete", func(w http.ResponseWriter, r *http.Request) error { return a.hangUp(w, r, k) })
		a.signal("PATCH "+resource, k.proto, "patch", func(w http.ResponseWriter, _ *http.Request) error {
			w.Header().Set("Allow", http.MethodDelete)
			return errorf(http.StatusMethodNotAllowed, apiv1.CodeMethodNotAllowed,
				"trickle ICE and ICE restarts are not supported: the answer carries every candidate; to reconnect, DELETE and POST a new offer")
		})
		a.register("OPTIONS "+endpoint, a.instrument("OPTIONS "+endpoint, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Accept-Post", "application/sdp")
			w.Header().Set("Allow", "OPTIONS, POST")
			w.WriteHeader(http.StatusNoContent)
		})))
	}
}

// signal registers a signaling route: instrumented, time-bounded, its
// errors written as the API's envelope and counted by result.
func (a *API) signal(pattern, proto, op string, h func(w http.ResponseWriter, r *http.Request) error) {
	a.register(pattern, a.instrument(pattern, a.withTimeout(a.opts.RequestTimeout, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err != nil {
			err = mapSignalingError(err)
		}
		a.signaling.observe(proto, op, err)
		if err != nil {
			a.fail(w, r, err)
		}
	}))))
}

// checkViewerToken authenticates a signaling request: 401 without a token or
// with a forged, malformed or expired one, or one signed by a key no longer
// listed; 403 with a good token of another session or without the grant
// need. grace > 0 accepts tokens expired for at most that long.
func (a *API) checkViewerToken(w http.ResponseWriter, r *http.Request, sessionID string, need viewertoken.Grant, grace time.Duration) error {
	token, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="avatarfleet"`)
		return errorf(http.StatusUnauthorized, apiv1.CodeUnauthorized, "missing bearer viewer token (the session's viewer_token)")
	}
	if a.opts.Tokens == nil {
		return errorf(http.StatusUnauthorized, apiv1.CodeUnauthorized, "viewer tokens are not enabled")
	}
	var err error
	if grace > 0 {
		err = a.opts.Tokens.VerifyWithGrace(token, sessionID, need, grace)
	} else {
		err = a.opts.Tokens.Verify(token, sessionID, need)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, viewertoken.ErrWrongSession):
		return errorf(http.StatusForbidden, apiv1.CodeForbidden, "viewer token is for another session")
	case errors.Is(err, viewertoken.ErrMissingGrant):
		return errorf(http.StatusForbidden, apiv1.CodeForbidden,
			"token lacks the %s grant; the session's viewer_token only subscribes: ask POST /v1/sessions/%s/tokens for one that may %s", need, sessionID, need)
	case errors.Is(err, viewertoken.ErrExpired):
		w.Header().Set("WWW-Authenticate", `Bearer realm="avatarfleet", error="invalid_token", error_description="expired"`)
		return errorf(http.StatusUnauthorized, apiv1.CodeUnauthorized, "viewer token expired; read the session again for a fresh one")
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="avatarfleet", error="invalid_token"`)
	return errorf(http.StatusUnauthorized, apiv1.CodeUnauthorized, "invalid viewer token")
}

// liveSession reads the session a signaling request names. Unknown and
// ended sessions are 404 not_found (their WHEP/WHIP endpoints are gone for
// good; a player should stop retrying); placing and starting ones are 409
// session_not_ready with Retry-After (retrying soon will work).
func (a *API) liveSession(ctx context.Context, id string) (*fleetv1.Session, error) {
	sess, err := a.opts.Sessions.Get(ctx, id)
	if errors.Is(err, sessions.ErrNotFound) {
		return nil, errorf(http.StatusNotFound, apiv1.CodeNotFound, "no session %q", id)
	}
	if err != nil {
		return nil, err
	}
	switch sess.GetState() {
	case fleetv1.SessionState_SESSION_STATE_READY:
		return sess, nil
	case fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.SessionState_SESSION_STATE_FAILED:
		return sess, errorf(http.StatusNotFound, apiv1.CodeNotFound, "session %s has ended", id)
	}
	return sess, &apiError{status: http.StatusConflict, code: apiv1.CodeSessionNotReady,
		message: "session " + id + " is " + sessionState(sess.GetState()) + "; retry shortly", retryAfter: notReadyRetry}
}

// offer answers POST /v1/sessions/{id}/whep (or /whip).
func (a *API) offer(w http.ResponseWriter, r *http.Request, k signalingKind) error {
	id := r.PathValue("id")
	if !validSessionID(id) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no session %q", id)
	}
	if err := a.checkViewerToken(w, r, id, k.grant, 0); err != nil {
		return err
	}
	offer, err := parseOffer(w, r, k.offer)
	if err != nil {
		return err
	}
	sess, err := a.liveSession(r.Context(), id)
	if err != nil {
		return err
	}
	ans, err := k.add(r.Context(), sess, offer, a.viewerParams(r, sess))
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/sdp")
	h.Set("Cache-Control", "no-store")
	h.Set("Location", "/v1/sessions/"+id+"/"+k.proto+"/"+ans.PeerID)
	for _, l := range iceServerLinks(ans.ICEServers) {
		h.Add("Link", l)
	}
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, ans.SDP)
	return nil
}

// hangUp answers DELETE /v1/sessions/{id}/whep/{peer} (or /whip/{peer}):
// 200 once the worker dropped the peer, also for a peer it did not know
// and for a session that has ended (its room went with it).
func (a *API) hangUp(w http.ResponseWriter, r *http.Request, k signalingKind) error {
	id, peer := r.PathValue("id"), r.PathValue("peer")
	if !validSessionID(id) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no session %q", id)
	}
	if err := a.checkViewerToken(w, r, id, k.grant, hangUpGrace); err != nil {
		return err
	}
	if !sessions.ValidPeerID(peer) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no %s resource %q", k.proto, peer)
	}
	sess, err := a.liveSession(r.Context(), id)
	var ae *apiError
	switch {
	case err == nil:
		if err := k.remove(r.Context(), sess, peer); err != nil {
			return err
		}
	case errors.As(err, &ae) && ae.status == http.StatusNotFound && sess != nil:
		// Ended: nothing left to remove.
	case errors.As(err, &ae) && ae.status == http.StatusConflict:
		// Not started yet: it cannot have peers.
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no %s resource %q", k.proto, peer)
	default:
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// mapSignalingError turns the session manager's signaling errors into API
// errors; the rest go through mapError.
func mapSignalingError(err error) error {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, errBodyTimeout):
		return bodyTimeoutError()
	case errors.Is(err, sessions.ErrInvalidSDP):
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidSDP, "the worker refused the offer: %v", err)
	case errors.Is(err, sessions.ErrTooManyPending):
		return &apiError{status: http.StatusTooManyRequests, code: apiv1.CodeQuotaExceeded, message: "too many viewers of this session (or of this token) are still connecting; retry later", retryAfter: pendingRetry}
	case errors.Is(err, sessions.ErrRoomFull):
		return &apiError{status: http.StatusServiceUnavailable, code: apiv1.CodeNoCapacity, message: "the session has its maximum of viewers; retry later", retryAfter: roomFullRetry}
	case errors.Is(err, sessions.ErrNoMedia):
		return &apiError{status: http.StatusServiceUnavailable, code: apiv1.CodeUnavailable, message: "the session's worker serves no media now; retry later", retryAfter: noMediaRetry}
	case errors.Is(err, sessions.ErrNotFound):
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "the session has no media room on its worker")
	}
	return mapError(err)
}
