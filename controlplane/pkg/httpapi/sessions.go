package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/proto/livekitroom"
	"github.com/avatarfleet/avatarfleet/proto/wav"
)

// Request limits (README, "REST API").
const (
	defaultIdleTimeout = 120
	minIdleTimeout     = 5
	maxIdleTimeout     = 86400
	defaultMaxDuration = 14400
	minMaxDuration     = 10
	maxMaxDuration     = 86400
	// Re-placement of a session whose worker is lost.
	defaultReplaceTimeout = 60
	minReplaceTimeout     = 1
	maxReplaceTimeout     = 86400
	maxSpeakRunes         = 10000
	maxLabels             = 32
	maxLabelValue         = 256
	maxIdempotencyKey     = 255
)

// ValidateCreate checks a create body and fills in defaults.
func ValidateCreate(req apiv1.CreateSessionRequest) (sessions.CreateParams, error) {
	p := sessions.CreateParams{
		Avatar:                req.Avatar,
		Voice:                 req.Voice,
		IdleTimeoutSeconds:    defaultIdleTimeout,
		MaxDurationSeconds:    defaultMaxDuration,
		RestartPolicy:         fleetv1.RestartPolicy_RESTART_POLICY_ON_WORKER_LOST,
		ReplaceTimeoutSeconds: defaultReplaceTimeout,
	}
	if p.Avatar == "" {
		p.Avatar = sessions.DefaultAvatar
	}
	if p.Voice == "" {
		p.Voice = sessions.DefaultVoice
	}
	if !fleetstore.ValidName(p.Avatar) {
		return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "avatar: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
	}
	if !fleetstore.ValidName(p.Voice) {
		return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "voice: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
	}
	if v := req.IdleTimeoutSeconds; v != nil {
		if *v < minIdleTimeout || *v > maxIdleTimeout {
			return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "idle_timeout_seconds: must be %d..%d", minIdleTimeout, maxIdleTimeout)
		}
		p.IdleTimeoutSeconds = uint32(*v)
	}
	if v := req.MaxDurationSeconds; v != nil {
		if *v < minMaxDuration || *v > maxMaxDuration {
			return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "max_duration_seconds: must be %d..%d", minMaxDuration, maxMaxDuration)
		}
		p.MaxDurationSeconds = uint32(*v)
	}
	switch req.RestartPolicy {
	case "", apiv1.RestartOnWorkerLost:
	case apiv1.RestartNever:
		p.RestartPolicy = fleetv1.RestartPolicy_RESTART_POLICY_NEVER
	default:
		return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "restart_policy: must be %q or %q", apiv1.RestartOnWorkerLost, apiv1.RestartNever)
	}
	if v := req.ReplaceTimeoutSeconds; v != nil {
		if *v < minReplaceTimeout || *v > maxReplaceTimeout {
			return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "replace_timeout_seconds: must be %d..%d", minReplaceTimeout, maxReplaceTimeout)
		}
		p.ReplaceTimeoutSeconds = uint32(*v)
	}
	if len(req.Labels) > maxLabels {
		return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "labels: at most %d", maxLabels)
	}
	for k, v := range req.Labels {
		if !fleetstore.ValidName(k) {
			return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "label key %q: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$", k)
		}
		if len(v) > maxLabelValue || !utf8.ValidString(v) {
			return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "label %q: value must be UTF-8 of at most %d bytes", k, maxLabelValue)
		}
	}
	if len(req.Labels) > 0 {
		p.Labels = req.Labels
	}
	if lk := req.LiveKit; lk != nil {
		if err := livekitroom.Validate(lk.URL, lk.Token); err != nil {
			return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidLiveKit, "livekit.%v", err)
		}
		p.LiveKit = &fleetv1.LiveKitRoom{Url: lk.URL, Token: lk.Token}
	}
	return p, nil
}

// requestHash identifies a create request's parameters, so an idempotency
// key reused with different parameters is told apart from a retry.
func requestHash(p sessions.CreateParams) string {
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	_ = enc.Encode([]any{p.Avatar, p.Voice, p.IdleTimeoutSeconds, p.MaxDurationSeconds, keys, p.RestartPolicy, p.ReplaceTimeoutSeconds,
		p.LiveKit.GetUrl(), p.LiveKit.GetToken()})
	for _, k := range keys {
		_ = enc.Encode(p.Labels[k])
	}
	d := sha256.Sum256(buf.Bytes())
	return hex.EncodeToString(d[:12])
}

func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > maxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// parseCreate reads and validates a create request: body and headers.
func parseCreate(w http.ResponseWriter, r *http.Request) (sessions.CreateParams, error) {
	var req apiv1.CreateSessionRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return sessions.CreateParams{}, err
	}
	p, err := ValidateCreate(req)
	if err != nil {
		return p, err
	}
	if k := r.Header.Get("Idempotency-Key"); k != "" || len(r.Header.Values("Idempotency-Key")) > 0 {
		if !validIdempotencyKey(k) {
			return p, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "Idempotency-Key: 1..%d printable ASCII characters", maxIdempotencyKey)
		}
		p.IdempotencyKey, p.RequestHash = k, requestHash(p)
	}
	return p, nil
}

func (a *API) createSession(w http.ResponseWriter, r *http.Request, pr auth.Principal) error {
	p, err := parseCreate(w, r)
	if err != nil {
		return err
	}
	p.Owner, p.MaxSessions = pr.Owner, pr.Limits.MaxSessions
	sess, err := a.opts.Sessions.Create(r.Context(), p)
	if err != nil {
		return err
	}
	out, err := a.sessionWithToken(sess, r)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/sessions/"+sess.GetId())
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// sessionWithToken converts a session and, while it is live, issues a fresh
// viewer token for it.
func (a *API) sessionWithToken(sess *fleetv1.Session, r *http.Request) (apiv1.Session, error) {
	out := toSession(sess, a.baseURL(r))
	if a.opts.Tokens != nil && !fleetstore.Terminal(sess.GetState()) {
		tok, err := a.opts.Tokens.Issue(sess.GetId())
		if err != nil {
			return out, err
		}
		out.ViewerToken = tok
	}
	return out, nil
}

// ownSession reads a session the principal may see: its own, or any for an
// admin. Others' sessions are reported as not found, revealing nothing.
func (a *API) ownSession(ctx context.Context, id string, p auth.Principal) (*fleetv1.Session, error) {
	if !validSessionID(id) {
		return nil, errorf(http.StatusNotFound, apiv1.CodeNotFound, "no session %q", id)
	}
	sess, err := a.opts.Sessions.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !p.Has(auth.ScopeAdmin) && sess.GetOwner() != p.Owner {
		return nil, sessions.ErrNotFound
	}
	return sess, nil
}

func validSessionID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (a *API) getSession(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sess, err := a.ownSession(r.Context(), r.PathValue("id"), p)
	if err != nil {
		return err
	}
	out, err := a.sessionWithToken(sess, r)
	if err != nil {
		return err
	}
	withLiveStatus(&out, a.liveStatus(r.Context(), sess))
	writeJSON(w, http.StatusOK, out)
	return nil
}

// liveStatus asks a ready session's worker for its status (media figures,
// LiveKit room connection) within StatsTimeout; any failure leaves them
// out rather than failing the read.
func (a *API) liveStatus(ctx context.Context, sess *fleetv1.Session) *fleetv1.SessionStatusResponse {
	if sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
		return nil
	}
	st, err := a.opts.Sessions.LiveStatus(ctx, sess, a.opts.StatsTimeout)
	if err != nil {
		a.log.Debug("session live status", "session", sess.GetId(), "err", err)
		return nil
	}
	return st
}

func (a *API) deleteSession(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sess, err := a.ownSession(r.Context(), r.PathValue("id"), p)
	if err != nil {
		return err
	}
	if _, err := a.opts.Sessions.Delete(r.Context(), sess.GetId()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) speak(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req apiv1.SpeakRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if n := utf8.RuneCountInString(req.Text); n < 1 || n > maxSpeakRunes || !utf8.ValidString(req.Text) {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "text: 1..%d characters of UTF-8", maxSpeakRunes)
	}
	sess, err := a.ownSession(r.Context(), r.PathValue("id"), p)
	if err != nil {
		return err
	}
	if err := a.opts.Sessions.Speak(r.Context(), sess.GetId(), req.Text, req.Interrupt); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "queued"})
	return nil
}

func (a *API) pushAudio(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if !hasMediaType(r, "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave") {
		return errorf(http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedMediaType, "body must be audio/wav")
	}
	sess, err := a.ownSession(r.Context(), r.PathValue("id"), p)
	if err != nil {
		return err
	}
	body, err := readLimited(w, r, maxAudioBody)
	if err != nil {
		return err
	}
	if len(body) < 44 || string(body[0:4]) != "RIFF" || string(body[8:12]) != "WAVE" {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidAudio, "body is not a RIFF/WAVE file")
	}
	// The header decides, before the body crosses the network: format,
	// 8..192 kHz, 1..2 channels, and at most a session's queue of audio
	// (a small file claiming a tiny rate or billions of samples is refused
	// here; the worker checks again).
	if _, err := wav.Probe(body, wav.MaxUploadDuration); err != nil {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidAudio, "%v", err)
	}
	if err := a.opts.Sessions.PushAudio(r.Context(), sess.GetId(), body); err != nil {
		if errors.Is(err, sessions.ErrInvalidInput) {
			return errorf(http.StatusBadRequest, apiv1.CodeInvalidAudio, "%v", err)
		}
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "queued"})
	return nil
}

func (a *API) interrupt(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	sess, err := a.ownSession(r.Context(), r.PathValue("id"), p)
	if err != nil {
		return err
	}
	if err := a.opts.Sessions.Interrupt(r.Context(), sess.GetId()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// mapError turns the session manager's and store's errors into API errors.
func mapError(err error) error {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, errBodyTimeout):
		return bodyTimeoutError()
	case errors.Is(err, sessions.ErrNoCapacity):
		return &apiError{status: http.StatusServiceUnavailable, code: apiv1.CodeNoCapacity, message: "no free slot on any worker; retry later", retryAfter: 2 * time.Second}
	case errors.Is(err, sessions.ErrQuotaExceeded):
		return errorf(http.StatusTooManyRequests, apiv1.CodeQuotaExceeded, "this API key holds its limit of live sessions; end one first")
	case errors.Is(err, sessions.ErrSpeechQueueFull):
		return &apiError{status: http.StatusTooManyRequests, code: apiv1.CodeSpeechQueueFull, message: err.Error(), retryAfter: time.Second}
	case errors.Is(err, sessions.ErrUnknownAvatar):
		return errorf(http.StatusBadRequest, apiv1.CodeUnknownAvatar, "no worker serves this avatar")
	case errors.Is(err, sessions.ErrUnknownVoice):
		return errorf(http.StatusBadRequest, apiv1.CodeUnknownVoice, "no worker serves this voice")
	case errors.Is(err, sessions.ErrNotFound), errors.Is(err, fleetstore.ErrNotFound):
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "not found")
	case errors.Is(err, sessions.ErrNotReady):
		return errorf(http.StatusConflict, apiv1.CodeSessionNotReady, "%v", err)
	case errors.Is(err, sessions.ErrIdempotencyConflict):
		return errorf(http.StatusConflict, apiv1.CodeConflict, "Idempotency-Key was used with different parameters")
	case errors.Is(err, sessions.ErrRoomJoin):
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidLiveKit, "%v", err)
	case errors.Is(err, sessions.ErrInvalidInput):
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "%v", err)
	case errors.Is(err, sessions.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusServiceUnavailable, code: apiv1.CodeUnavailable, message: "service temporarily unavailable; retry later", retryAfter: time.Second}
	}
	return err
}
