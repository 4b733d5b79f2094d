package httpapi

import (
	"net/http"
	"slices"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Bounds of a session token's lifetime (POST /v1/sessions/{id}/tokens).
const (
	minTokenTTL = 60
	maxTokenTTL = 86400
)

// parseTokenRequest checks a token request: grants known and at least one
// (duplicates folded, canonical order), ttl within bounds or defaultTTL.
func parseTokenRequest(req apiv1.CreateTokenRequest, defaultTTL time.Duration) ([]viewertoken.Grant, time.Duration, error) {
	if len(req.Grants) == 0 {
		return nil, 0, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, `grants: at least one of "subscribe", "publish"`)
	}
	if len(req.Grants) > 8 {
		return nil, 0, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "grants: at most 8 entries")
	}
	var grants []viewertoken.Grant
	for _, g := range viewertoken.AllGrants {
		if slices.Contains(req.Grants, string(g)) {
			grants = append(grants, g)
		}
	}
	for _, g := range req.Grants {
		if !slices.Contains(grants, viewertoken.Grant(g)) {
			return nil, 0, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, `grants: unknown grant %q (want "subscribe" or "publish")`, g)
		}
	}
	ttl := defaultTTL
	if v := req.TTLSeconds; v != nil {
		if *v < minTokenTTL || *v > maxTokenTTL {
			return nil, 0, errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "ttl_seconds: must be %d..%d", minTokenTTL, maxTokenTTL)
		}
		ttl = time.Duration(*v) * time.Second
	}
	return grants, ttl, nil
}

// createToken answers POST /v1/sessions/{id}/tokens: a token with the asked
// grants for a live session of the caller's own. Another key's session is
// 404 not_found, as for every session route, and so for admin keys too:
// only the owner hands out the right to speak to its avatar.
func (a *API) createToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if a.opts.Tokens == nil {
		return errorf(http.StatusServiceUnavailable, apiv1.CodeUnavailable, "session tokens are not enabled")
	}
	var req apiv1.CreateTokenRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	grants, ttl, err := parseTokenRequest(req, min(a.opts.Tokens.TTL(), maxTokenTTL*time.Second))
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if !validSessionID(id) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no session %q", id)
	}
	sess, err := a.opts.Sessions.Get(r.Context(), id)
	if err != nil {
		return err
	}
	if sess.GetOwner() != p.Owner {
		return sessions.ErrNotFound
	}
	if fleetstore.Terminal(sess.GetState()) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "session %s has ended", id)
	}
	tok, exp, err := a.opts.Tokens.IssueGrants(id, grants, ttl)
	if err != nil {
		return err
	}
	out := apiv1.Token{Token: tok, ExpiresAt: exp.UTC(), Grants: make([]string, len(grants))}
	for i, g := range grants {
		out.Grants[i] = string(g)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}
