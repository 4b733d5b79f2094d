package httpapi

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
)

// Pagination of GET /v1/sessions.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// maxListScan bounds the records one request reads when a state filter
	// skips most of them: the page comes back short, with a token to go on.
	maxListScan = 10 * maxListLimit
	// pageTokenPrefix versions the opaque page token.
	pageTokenPrefix = "v1:"
)

var sessionStates = map[string]bool{"placing": true, "starting": true, "ready": true, "ended": true, "failed": true}

// listSessions answers GET /v1/sessions?limit=&page_token=&state=: the
// caller's sessions in session id order (every session for an admin key),
// read from the owner's index in etcd, a page at a time. A session that
// exists for the whole walk is listed exactly once; one created meanwhile
// appears if its id sorts after the cursor. A page may hold fewer than
// limit sessions (state filter); the walk ends when next_page_token is
// absent.
func (a *API) listSessions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q := r.URL.Query()
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "limit: want 1..%d", maxListLimit)
		}
		limit = n
	}
	after := ""
	if v := q.Get("page_token"); v != "" {
		id, ok := decodePageToken(v)
		if !ok {
			return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "page_token: not a token this API issued")
		}
		after = id
	}
	state := q.Get("state")
	if state != "" && !sessionStates[state] {
		return errorf(http.StatusBadRequest, apiv1.CodeInvalidRequest, "state: want one of placing, starting, ready, ended, failed")
	}
	owner := p.Owner
	if p.Has(auth.ScopeAdmin) {
		owner = "" // every session of the fleet
	}
	out := apiv1.SessionList{Sessions: []apiv1.Session{}}
	base := a.baseURL(r)
	for scanned := 0; ; {
		page, err := a.opts.Sessions.ListPage(r.Context(), owner, after, limit)
		if err != nil {
			return err
		}
		scanned += len(page.Sessions)
		for _, s := range page.Sessions {
			conv := toSession(s, base)
			if state != "" && conv.State != state {
				continue
			}
			out.Sessions = append(out.Sessions, conv)
			if len(out.Sessions) == limit {
				break
			}
		}
		if len(out.Sessions) == limit {
			last := out.Sessions[len(out.Sessions)-1].ID
			if last != page.Last || page.More {
				out.NextPageToken = encodePageToken(last)
			}
			break
		}
		if !page.More {
			break
		}
		after = page.Last
		if scanned >= maxListScan {
			out.NextPageToken = encodePageToken(after)
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func encodePageToken(after string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + after))
}

func decodePageToken(tok string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", false
	}
	id, ok := strings.CutPrefix(string(b), pageTokenPrefix)
	if !ok || !validSessionID(id) {
		return "", false
	}
	return id, true
}
