package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Preview limits: what the control plane accepts from a worker.
const (
	maxPreviewBytes = 64 << 10
	// previewTries is how many workers advertising the avatar are asked
	// before the request fails; previewTimeout bounds each call.
	previewTries   = 3
	previewTimeout = 2 * time.Second
	// previewMaxAge lets a browser keep a preview this long without asking
	// (private: it is behind an API key); after that it revalidates with
	// If-None-Match.
	previewMaxAge = 300
)

// WorkerClients dials workers by id and address (*workerclient.Pool).
type WorkerClients interface {
	Client(id, addr string) (fleetv1.WorkerServiceClient, error)
}

// previewType reports whether a worker may send an image of this type.
func previewType(ct string) bool { return ct == "image/jpeg" || ct == "image/png" }

// avatarPreview answers GET /v1/avatars/{name}/preview: the still of an
// avatar, fetched from one of the active workers that advertise it (the
// control plane keeps no copy). ETag is the image's digest; a matching
// If-None-Match gets 304.
func (a *API) avatarPreview(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	name := r.PathValue("name")
	if !fleetstore.ValidName(name) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no avatar %q", name)
	}
	if a.opts.WorkerClients == nil {
		return errorf(http.StatusServiceUnavailable, apiv1.CodeUnavailable, "previews are not available on this replica")
	}
	cands := previewCandidates(a.fleet().Workers(), name)
	if len(cands) == 0 {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no active worker serves avatar %q", name)
	}
	var lastErr error
	notFound := 0
	for i, v := range cands {
		if i == previewTries {
			break
		}
		resp, err := a.fetchPreview(r.Context(), v.Worker, name)
		if err == nil {
			writePreview(w, r, resp)
			return nil
		}
		if status.Code(err) == codes.NotFound {
			notFound++
		}
		a.log.Info("avatar preview: worker failed", "worker", v.Worker.GetId(), "avatar", name, "err", err)
		lastErr = err
	}
	if notFound == min(len(cands), previewTries) {
		return errorf(http.StatusNotFound, apiv1.CodeNotFound, "no preview of avatar %q", name)
	}
	a.log.Warn("avatar preview unavailable", "avatar", name, "err", lastErr)
	return &apiError{status: http.StatusServiceUnavailable, code: apiv1.CodeUnavailable,
		message: "no worker serving this avatar answered; retry later", retryAfter: time.Second}
}

// previewCandidates are the active workers advertising name, those with
// the most free slots first (the least busy answer), then by id.
func previewCandidates(views []registry.WorkerView, name string) []registry.WorkerView {
	type cand struct {
		v    registry.WorkerView
		free int
	}
	var cs []cand
	for _, v := range views {
		if !catalogWorker(v) || !containsName(advertised(v.Worker.GetAvatars()), name) {
			continue
		}
		_, free := slotsOf(v)
		cs = append(cs, cand{v, free})
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].free != cs[j].free {
			return cs[i].free > cs[j].free
		}
		return cs[i].v.Worker.GetId() < cs[j].v.Worker.GetId()
	})
	out := make([]registry.WorkerView, len(cs))
	for i, c := range cs {
		out[i] = c.v
	}
	return out
}

func containsName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// fetchPreview asks one worker and checks what it sent: a worker's answer
// reaches browsers, so it must be a small image of an allowed type.
func (a *API) fetchPreview(ctx context.Context, wk *fleetv1.Worker, name string) (*fleetv1.AvatarPreviewResponse, error) {
	cl, err := a.opts.WorkerClients.Client(wk.GetId(), wk.GetGrpcAddress())
	if err != nil {
		return nil, fmt.Errorf("preview of %s from %s: %w", name, wk.GetId(), err)
	}
	cctx, cancel := context.WithTimeout(ctx, previewTimeout)
	defer cancel()
	resp, err := cl.AvatarPreview(cctx, &fleetv1.AvatarPreviewRequest{Avatar: name})
	if err != nil {
		return nil, fmt.Errorf("preview of %s from %s: %w", name, wk.GetId(), err)
	}
	img := resp.GetImage()
	ct := resp.GetContentType()
	switch {
	case len(img) == 0 || len(img) > maxPreviewBytes:
		return nil, fmt.Errorf("preview of %s from %s: %d bytes (want 1..%d)", name, wk.GetId(), len(img), maxPreviewBytes)
	case !previewType(ct):
		return nil, fmt.Errorf("preview of %s from %s: content type %q", name, wk.GetId(), ct)
	case http.DetectContentType(img) != ct:
		return nil, fmt.Errorf("preview of %s from %s: bytes are %s, not %s", name, wk.GetId(), http.DetectContentType(img), ct)
	}
	return resp, nil
}

// writePreview sends the image with its validators, or 304 when the
// client's copy is current.
func writePreview(w http.ResponseWriter, r *http.Request, resp *fleetv1.AvatarPreviewResponse) {
	sum := sha256.Sum256(resp.GetImage())
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, max-age="+strconv.Itoa(previewMaxAge))
	h.Set("Vary", "Authorization")
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", resp.GetContentType())
	h.Set("Content-Length", strconv.Itoa(len(resp.GetImage())))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = bytes.NewReader(resp.GetImage()).WriteTo(w)
	}
}

// etagMatches implements If-None-Match's weak comparison: "*" or any listed
// tag, W/ prefixes ignored.
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
