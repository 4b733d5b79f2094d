package httpapi

import (
	"net/http"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// maxSessionEventStreams caps the open event streams of one session on one
// replica: its viewers share a token, so the cap is per session, not per
// viewer, and bounds what one leaked token can hold open.
const maxSessionEventStreams = 256

// sessionEvents answers GET /v1/sessions/{id}/events: the server-sent
// events of one session only (session.moved, session.ended, speaking, …),
// for a page that holds the session's viewer token and no API key. The
// token comes as "Authorization: Bearer <token>" or, because a browser's
// EventSource cannot set headers, as ?access_token=<token>. The JSON, the
// SSE ids and Last-Event-ID are those of GET /v1/events.
func (a *API) sessionEvents(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !validSessionID(id) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no session %q", id)
	}
	if tok := r.URL.Query().Get("access_token"); tok != "" && r.Header.Get("Authorization") == "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	if err := a.checkViewerToken(w, r, id, viewertoken.Subscribe, 0); err != nil {
		return err
	}
	if a.opts.Events == nil {
		return errorf(http.StatusServiceUnavailable, apiv1.CodeUnavailable, "event stream unavailable")
	}
	release, err := a.limits.openStream(auth.Principal{Owner: "session:" + id,
		Limits: auth.Limits{MaxEventStreams: maxSessionEventStreams}})
	if err != nil {
		return err
	}
	defer release()
	// Only this session's subjects: the control plane's, and those of
	// whichever worker hosts it (it may move).
	subjects := []string{
		fleetbus.SessionSubject(id),
		fleetbus.WorkerEventsPre + "*.sessions." + fleetbus.Token(id),
	}
	return a.streamEvents(w, r, subjects, func(e *fleetv1.Event) bool { return e.GetSessionId() == id })
}

// sessionEventsHandler is sessionEvents with its errors written as the
// API's envelope (the route takes a viewer token, not an API key).
func (a *API) sessionEventsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.sessionEvents(w, r); err != nil {
			a.fail(w, r, err)
		}
	})
}
