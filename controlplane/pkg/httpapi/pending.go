package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// viewerParams are what the worker's SFU needs to cap a session's viewers
// still connecting: a stable id of the viewer token the offer came with (a
// digest, so the token itself never leaves the control plane) and the
// session owner's pending-viewer limits.
func (a *API) viewerParams(r *http.Request, sess *fleetv1.Session) sessions.ViewerParams {
	var vp sessions.ViewerParams
	if token, ok := auth.BearerToken(r.Header.Get("Authorization")); ok {
		d := sha256.Sum256([]byte(token))
		vp.TokenID = hex.EncodeToString(d[:12])
	}
	if a.opts.Keys != nil {
		// An owner no longer in the keys file gets the defaults.
		l, _ := a.opts.Keys.LimitsOf(sess.GetOwner())
		vp.MaxPending, vp.MaxPendingPerToken = l.MaxPendingViewers, l.MaxPendingViewersPerToken
	}
	return vp
}
