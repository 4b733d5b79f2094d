package apiclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// CreateSession asks for a new session (POST /v1/sessions). A non-empty
// idempotencyKey is sent as the Idempotency-Key header, so a retried
// request returns the session of the first one. With no free slot the
// error is an *APIError with code no_capacity and RetryAfter set.
func (c *Client) CreateSession(ctx context.Context, req apiv1.CreateSessionRequest, idempotencyKey string) (*apiv1.Session, error) {
	body, err := jsonBody(req)
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	var h http.Header
	if idempotencyKey != "" {
		h = http.Header{"Idempotency-Key": {idempotencyKey}}
	}
	var s apiv1.Session
	if _, err := c.do(ctx, call{
		method: http.MethodPost, path: "/v1/sessions",
		body: body, contentType: "application/json", header: h, out: &s,
	}); err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	return &s, nil
}

// GetSession returns one session (GET /v1/sessions/{id}), ended ones
// included.
func (c *Client) GetSession(ctx context.Context, id string) (*apiv1.Session, error) {
	p, err := pathID("session", id)
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	var s apiv1.Session
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/sessions/" + p, out: &s}); err != nil {
		return nil, fmt.Errorf("get session %q: %w", id, err)
	}
	return &s, nil
}

// ListOptions select one page of GET /v1/sessions.
type ListOptions struct {
	// Limit is the page size (0: the server's default, 100; at most 1000).
	Limit int
	// PageToken continues after the page that returned it.
	PageToken string
	// State keeps only sessions in that state.
	State string
}

// ListSessionsPage returns one page of the sessions the API lists; the
// list's NextPageToken, when set, reads the next one.
func (c *Client) ListSessionsPage(ctx context.Context, o ListOptions) (apiv1.SessionList, error) {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.PageToken != "" {
		q.Set("page_token", o.PageToken)
	}
	if o.State != "" {
		q.Set("state", o.State)
	}
	path := "/v1/sessions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var l apiv1.SessionList
	if _, err := c.do(ctx, call{method: http.MethodGet, path: path, out: &l}); err != nil {
		return apiv1.SessionList{}, fmt.Errorf("list sessions: %w", err)
	}
	if l.Sessions == nil {
		l.Sessions = []apiv1.Session{}
	}
	return l, nil
}

// maxListPages bounds ListSessions' walk, against a server that never ends
// its pages.
const maxListPages = 100000

// ListSessions returns every session the API lists (GET /v1/sessions),
// following the pages to the end. The slice is never nil.
func (c *Client) ListSessions(ctx context.Context) ([]apiv1.Session, error) {
	out := []apiv1.Session{}
	tok := ""
	for range maxListPages {
		l, err := c.ListSessionsPage(ctx, ListOptions{Limit: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		out = append(out, l.Sessions...)
		if l.NextPageToken == "" || l.NextPageToken == tok {
			return out, nil
		}
		tok = l.NextPageToken
	}
	return nil, fmt.Errorf("list sessions: more than %d pages", maxListPages)
}

// DeleteSession ends a session (DELETE /v1/sessions/{id}). Deleting an
// already ended session succeeds; an id that never existed is not_found.
func (c *Client) DeleteSession(ctx context.Context, id string) error {
	p, err := pathID("session", id)
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	if _, err := c.do(ctx, call{method: http.MethodDelete, path: "/v1/sessions/" + p}); err != nil {
		return fmt.Errorf("delete session %q: %w", id, err)
	}
	return nil
}

// Speak queues text for the avatar to say (POST /v1/sessions/{id}/speak).
func (c *Client) Speak(ctx context.Context, id string, req apiv1.SpeakRequest) error {
	p, err := pathID("session", id)
	if err != nil {
		return fmt.Errorf("speak: %w", err)
	}
	body, err := jsonBody(req)
	if err != nil {
		return fmt.Errorf("speak %q: %w", id, err)
	}
	if _, err := c.do(ctx, call{
		method: http.MethodPost, path: "/v1/sessions/" + p + "/speak",
		body: body, contentType: "application/json",
	}); err != nil {
		return fmt.Errorf("speak %q: %w", id, err)
	}
	return nil
}

// PushAudio sends a WAV file (16-bit PCM, any rate, mono or stereo) for the
// avatar to speak (POST /v1/sessions/{id}/audio). wav is streamed, not
// buffered; the server refuses bodies over 50 MiB.
func (c *Client) PushAudio(ctx context.Context, id string, wav io.Reader) error {
	p, err := pathID("session", id)
	if err != nil {
		return fmt.Errorf("push audio: %w", err)
	}
	if wav == nil {
		return fmt.Errorf("push audio %q: nil reader", id)
	}
	if _, err := c.do(ctx, call{
		method: http.MethodPost, path: "/v1/sessions/" + p + "/audio",
		body: wav, contentType: "audio/wav",
	}); err != nil {
		return fmt.Errorf("push audio %q: %w", id, err)
	}
	return nil
}

// Interrupt stops the avatar's current speech (POST
// /v1/sessions/{id}/interrupt).
func (c *Client) Interrupt(ctx context.Context, id string) error {
	p, err := pathID("session", id)
	if err != nil {
		return fmt.Errorf("interrupt: %w", err)
	}
	if _, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/sessions/" + p + "/interrupt"}); err != nil {
		return fmt.Errorf("interrupt %q: %w", id, err)
	}
	return nil
}

// CreateToken issues a token for one of the key's own sessions (POST
// /v1/sessions/{id}/tokens): grants "subscribe" (WHEP) and/or "publish"
// (WHIP), valid for ttlSeconds (60..86400; 0 means the server's default).
// Another key's session is not_found.
func (c *Client) CreateToken(ctx context.Context, id string, grants []string, ttlSeconds int) (*apiv1.Token, error) {
	p, err := pathID("session", id)
	if err != nil {
		return nil, fmt.Errorf("create token: %w", err)
	}
	req := apiv1.CreateTokenRequest{Grants: grants}
	if ttlSeconds != 0 {
		req.TTLSeconds = &ttlSeconds
	}
	body, err := jsonBody(req)
	if err != nil {
		return nil, fmt.Errorf("create token for %q: %w", id, err)
	}
	var tok apiv1.Token
	if _, err := c.do(ctx, call{
		method: http.MethodPost, path: "/v1/sessions/" + p + "/tokens",
		body: body, contentType: "application/json", out: &tok,
	}); err != nil {
		return nil, fmt.Errorf("create token for %q: %w", id, err)
	}
	return &tok, nil
}
