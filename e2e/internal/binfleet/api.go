package binfleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// APIGet GETs a REST path with the key (none when empty) and decodes the
// JSON answer into out (unless nil). A status other than 200 is an error.
func APIGet(ctx context.Context, base, key, path string, out any) error {
	return Call(ctx, http.MethodGet, base+path, key, "", nil, http.StatusOK, out)
}

// Call sends one request with a bearer key and, when body is not nil, the
// content type; it wants the status want and decodes a JSON answer into out
// (unless nil).
func Call(ctx context.Context, method, url, key, contentType string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %s, want %d: %s", method, url, res.Status, want, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, url, err)
	}
	return nil
}

// CreateSession is POST /v1/sessions; it wants 201.
func (f *Fleet) CreateSession(ctx context.Context, req apiv1.CreateSessionRequest) (apiv1.Session, error) {
	var s apiv1.Session
	body, err := json.Marshal(req)
	if err != nil {
		return s, fmt.Errorf("encode create request: %w", err)
	}
	err = Call(ctx, http.MethodPost, f.URL+"/v1/sessions", f.APIKey, "application/json", body, http.StatusCreated, &s)
	return s, err
}

// GetSession is GET /v1/sessions/{id}.
func (f *Fleet) GetSession(ctx context.Context, id string) (apiv1.Session, error) {
	var s apiv1.Session
	err := APIGet(ctx, f.URL, f.APIKey, "/v1/sessions/"+id, &s)
	return s, err
}

// DeleteSession is DELETE /v1/sessions/{id}; it wants 204.
func (f *Fleet) DeleteSession(ctx context.Context, id string) error {
	return Call(ctx, http.MethodDelete, f.URL+"/v1/sessions/"+id, f.APIKey, "", nil, http.StatusNoContent, nil)
}

// PostAudio is POST /v1/sessions/{id}/audio with a WAV body; it wants 202.
func (f *Fleet) PostAudio(ctx context.Context, id string, wav []byte) error {
	return Call(ctx, http.MethodPost, f.URL+"/v1/sessions/"+id+"/audio", f.APIKey, "audio/wav", wav, http.StatusAccepted, nil)
}

// Interrupt is POST /v1/sessions/{id}/interrupt; it wants 204.
func (f *Fleet) Interrupt(ctx context.Context, id string) error {
	return Call(ctx, http.MethodPost, f.URL+"/v1/sessions/"+id+"/interrupt", f.APIKey, "", nil, http.StatusNoContent, nil)
}

// WHEPURL is the absolute WHEP endpoint of a session (its whep_url may be
// relative to the control plane).
func (f *Fleet) WHEPURL(s apiv1.Session) string {
	if strings.HasPrefix(s.WHEPURL, "http://") || strings.HasPrefix(s.WHEPURL, "https://") {
		return s.WHEPURL
	}
	if s.WHEPURL != "" {
		return f.URL + s.WHEPURL
	}
	return f.URL + "/v1/sessions/" + s.ID + "/whep"
}
