package httpapi

import (
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// maxRecordingDownload sizes GET …/recordings/{rid}'s time limit (a
// recording file is at most the worker's --recording-max-mib).
const maxRecordingDownload = 4 << 30

var recordingIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

func (a *API) recordingRoutes() {
	sess := auth.ScopeSessions
	a.handle("POST /v1/sessions/{id}/recordings", sess, a.startRecording)
	a.handleBody("GET /v1/sessions/{id}/recordings/{rid}", sess, maxRecordingDownload, a.fetchRecording)
	a.handle("DELETE /v1/sessions/{id}/recordings/{rid}", sess, a.stopRecording)
}

// recordingError maps the session manager's errors of a download.
func recordingError(err error) error {
	switch {
	case errors.Is(err, sessions.ErrRecordingNotFound):
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no such recording")
	case errors.Is(err, sessions.ErrRecordingBusy):
		return errorf(http.StatusConflict, apiv1.CodeConflict, "the recording is still in progress: stop it first")
	case errors.Is(err, sessions.ErrRecordingFailed):
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "%s", err.Error())
	}
	return err
}

func (a *API) startRecording(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sess, err := a.ownSession(r.Context(), r.PathValue("id"), p)
	if err != nil {
		return err
	}
	rec, err := a.opts.Sessions.StartRecording(r.Context(), sess.GetId())
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/sessions/"+sess.GetId()+"/recordings/"+rec.GetId())
	writeJSON(w, http.StatusCreated, toRecording(rec))
	return nil
}

// ownRecording is the session of the path's {id}, which p must own, and
// the path's recording id {rid}, checked (a malformed one is 404).
func (a *API) ownRecording(r *http.Request, p auth.Principal) (*fleetv1.Session, string, error) {
	sess, err := a.ownSession(r.Context(), r.PathValue("id"), p)
	if err != nil {
		return nil, "", err
	}
	rid := r.PathValue("rid")
	if !recordingIDPattern.MatchString(rid) {
		return nil, "", errorf(http.StatusNotFound, apiv1.CodeNotFound, "no such recording")
	}
	return sess, rid, nil
}

func (a *API) stopRecording(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sess, rid, err := a.ownRecording(r, p)
	if err != nil {
		return err
	}
	rec, err := a.opts.Sessions.StopRecording(r.Context(), sess.GetId(), rid)
	if errors.Is(err, sessions.ErrRecordingNotFound) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no such recording")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toRecording(rec))
	return nil
}

func (a *API) fetchRecording(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sess, rid, err := a.ownRecording(r, p)
	if err != nil {
		return err
	}
	rc, size, err := a.opts.Sessions.FetchRecording(r.Context(), sess.GetId(), rid)
	if err != nil {
		return recordingError(err)
	}
	defer func() { _ = rc.Close() }()
	h := w.Header()
	h.Set("Content-Type", "video/webm")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Content-Disposition", `attachment; filename="`+rid+`.webm"`)
	w.WriteHeader(http.StatusOK)
	if n, err := io.Copy(w, rc); err != nil {
		a.log.Warn("recording download cut", "session", sess.GetId(), "recording", rid, "sent", n, "err", err)
	}
	return nil
}
