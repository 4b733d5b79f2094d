package apiclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// roundTrip answers requests with fixed responses and records them; it
// checks request building without any server.
type roundTrip struct {
	reqs []*http.Request
	body []string
	resp func(*http.Request) *http.Response
}

func (rt *roundTrip) RoundTrip(r *http.Request) (*http.Response, error) {
	var b []byte
	if r.Body != nil {
		b, _ = io.ReadAll(r.Body)
	}
	rt.reqs = append(rt.reqs, r)
	rt.body = append(rt.body, string(b))
	return rt.resp(r), nil
}

func respond(status int, ct string, body io.Reader) func(*http.Request) *http.Response {
	return func(r *http.Request) *http.Response {
		h := http.Header{}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(body), Request: r}
	}
}

func newTestClient(t *testing.T, rt *roundTrip) *Client {
	t.Helper()
	c, err := New(Options{BaseURL: "http://cp.example:8080/prefix/", APIKey: "k1", HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewValidatesBaseURL(t *testing.T) {
	for _, bad := range []string{"", "127.0.0.1:8080", "ftp://h", "http://", "http://h/?a=b", "http://h/#x", "://x"} {
		if _, err := New(Options{BaseURL: bad}); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
	c, err := New(Options{BaseURL: "https://h:1/a/b/"})
	if err != nil || c.BaseURL() != "https://h:1/a/b" {
		t.Fatalf("New: %v %v", c, err)
	}
}

func TestRequests(t *testing.T) {
	idle := 30
	tests := []struct {
		name                         string
		call                         func(context.Context, *Client) error
		status                       int
		respBody                     string
		method, path, ctype, reqBody string
		idemKey                      string
	}{
		{
			name: "create with idempotency key",
			call: func(ctx context.Context, c *Client) error {
				s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Avatar: "alice", IdleTimeoutSeconds: &idle}, "key-1")
				if err == nil && s.ID != "s1" {
					return errors.New("bad session " + s.ID)
				}
				return err
			},
			status: 201, respBody: `{"id":"s1","state":"placing"}`,
			method: "POST", path: "/prefix/v1/sessions", ctype: "application/json",
			reqBody: `{"avatar":"alice","idle_timeout_seconds":30}`, idemKey: "key-1",
		},
		{
			name: "get escapes the id",
			call: func(ctx context.Context, c *Client) error {
				_, err := c.GetSession(ctx, "a/b c")
				return err
			},
			status: 200, respBody: `{"id":"a/b c"}`,
			method: "GET", path: "/prefix/v1/sessions/a%2Fb%20c",
		},
		{
			name: "list",
			call: func(ctx context.Context, c *Client) error {
				l, err := c.ListSessions(ctx)
				if err == nil && (l == nil || len(l) != 0) {
					return errors.New("want empty non-nil list")
				}
				return err
			},
			status: 200, respBody: `{"sessions":null}`,
			method: "GET", path: "/prefix/v1/sessions",
		},
		{
			name:   "delete",
			call:   func(ctx context.Context, c *Client) error { return c.DeleteSession(ctx, "s1") },
			status: 204, method: "DELETE", path: "/prefix/v1/sessions/s1",
		},
		{
			name: "speak",
			call: func(ctx context.Context, c *Client) error {
				return c.Speak(ctx, "s1", apiv1.SpeakRequest{Text: "hi", Interrupt: true})
			},
			status: 202, method: "POST", path: "/prefix/v1/sessions/s1/speak", ctype: "application/json",
			reqBody: `{"text":"hi","interrupt":true}`,
		},
		{
			name: "audio",
			call: func(ctx context.Context, c *Client) error {
				return c.PushAudio(ctx, "s1", strings.NewReader("RIFF...."))
			},
			status: 202, method: "POST", path: "/prefix/v1/sessions/s1/audio", ctype: "audio/wav", reqBody: "RIFF....",
		},
		{
			name: "create token",
			call: func(ctx context.Context, c *Client) error {
				tok, err := c.CreateToken(ctx, "s1", []string{"publish"}, 120)
				if err == nil && (tok.Token != "t" || len(tok.Grants) != 1 || tok.ExpiresAt.IsZero()) {
					return errors.New("bad token")
				}
				return err
			},
			status: 201, respBody: `{"token":"t","grants":["publish"],"expires_at":"2026-12-04T20:00:00Z"}`,
			method: "POST", path: "/prefix/v1/sessions/s1/tokens", ctype: "application/json",
			reqBody: `{"grants":["publish"],"ttl_seconds":120}`,
		},
		{
			name: "create token, default ttl",
			call: func(ctx context.Context, c *Client) error {
				_, err := c.CreateToken(ctx, "s1", []string{"subscribe", "publish"}, 0)
				return err
			},
			status: 201, respBody: `{"token":"t","grants":["subscribe","publish"],"expires_at":"2026-12-04T20:00:00Z"}`,
			method: "POST", path: "/prefix/v1/sessions/s1/tokens", ctype: "application/json",
			reqBody: `{"grants":["subscribe","publish"]}`,
		},
		{
			name:   "interrupt",
			call:   func(ctx context.Context, c *Client) error { return c.Interrupt(ctx, "s1") },
			status: 204, method: "POST", path: "/prefix/v1/sessions/s1/interrupt",
		},
		{
			name: "workers",
			call: func(ctx context.Context, c *Client) error {
				l, err := c.ListWorkers(ctx)
				if err == nil && (len(l) != 1 || l[0].GPUs[0].Slots != 2) {
					return errors.New("bad workers")
				}
				return err
			},
			status: 200, respBody: `{"workers":[{"id":"w1","gpus":[{"index":0,"slots":2}],"sessions":1}]}`,
			method: "GET", path: "/prefix/v1/workers",
		},
		{
			name: "drain with empty body",
			call: func(ctx context.Context, c *Client) error {
				w, err := c.DrainWorker(ctx, "w1")
				if err == nil && w != nil {
					return errors.New("want nil worker")
				}
				return err
			},
			status: 202, method: "POST", path: "/prefix/v1/workers/w1/drain",
		},
		{
			name: "drain with a non-worker body",
			call: func(ctx context.Context, c *Client) error {
				w, err := c.DrainWorker(ctx, "w1")
				if err == nil && w != nil {
					return errors.New("want nil worker")
				}
				return err
			},
			status: 202, respBody: `{"status":"draining"}`,
			method: "POST", path: "/prefix/v1/workers/w1/drain",
		},
		{
			name: "undrain with worker body",
			call: func(ctx context.Context, c *Client) error {
				w, err := c.UndrainWorker(ctx, "w1")
				if err == nil && (w == nil || w.State != "active") {
					return errors.New("want the worker")
				}
				return err
			},
			status: 200, respBody: `{"id":"w1","state":"active"}`,
			method: "POST", path: "/prefix/v1/workers/w1/undrain",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &roundTrip{resp: respond(tt.status, "application/json", strings.NewReader(tt.respBody))}
			if err := tt.call(context.Background(), newTestClient(t, rt)); err != nil {
				t.Fatal(err)
			}
			if len(rt.reqs) != 1 {
				t.Fatalf("%d requests", len(rt.reqs))
			}
			r := rt.reqs[0]
			if r.Method != tt.method || r.URL.EscapedPath() != tt.path {
				t.Errorf("request %s %s, want %s %s", r.Method, r.URL.EscapedPath(), tt.method, tt.path)
			}
			if got := r.Header.Get("Authorization"); got != "Bearer k1" {
				t.Errorf("Authorization %q", got)
			}
			if got := r.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if got := r.Header.Get("Idempotency-Key"); got != tt.idemKey {
				t.Errorf("Idempotency-Key %q, want %q", got, tt.idemKey)
			}
			if rt.body[0] != tt.reqBody {
				t.Errorf("body %q, want %q", rt.body[0], tt.reqBody)
			}
		})
	}
}

func TestResponseErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   io.Reader
		want   string
	}{
		{"api error", 404, strings.NewReader(`{"error":{"code":"not_found","message":"no session"}}`), `get session "s1": not_found: no session`},
		{"empty success body", 200, strings.NewReader(""), "empty response body"},
		{"bad json", 200, strings.NewReader("{"), "decode response"},
		{"oversized body", 200, io.MultiReader(strings.NewReader(`{"id":"`), strings.NewReader(strings.Repeat("x", maxResponseBytes))), "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &roundTrip{resp: respond(tt.status, "application/json", tt.body)}
			_, err := newTestClient(t, rt).GetSession(context.Background(), "s1")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestEmptyIDMakesNoRequest(t *testing.T) {
	rt := &roundTrip{resp: respond(200, "application/json", strings.NewReader("{}"))}
	c := newTestClient(t, rt)
	ctx := context.Background()
	if _, err := c.GetSession(ctx, ""); err == nil {
		t.Error("GetSession accepted an empty id")
	}
	if err := c.DeleteSession(ctx, ""); err == nil {
		t.Error("DeleteSession accepted an empty id")
	}
	if _, err := c.DrainWorker(ctx, ""); err == nil {
		t.Error("DrainWorker accepted an empty id")
	}
	if len(rt.reqs) != 0 {
		t.Fatalf("%d requests sent", len(rt.reqs))
	}
}

func TestEvents(t *testing.T) {
	stream := ": hello\n\ndata: {\"id\":\"e1\",\"type\":\"session.ready\",\"session_id\":\"s1\"}\n\n" +
		"data: {\"id\":\"e2\",\"type\":\"session.ended\",\"session_id\":\"s1\"}\n\n"
	t.Run("stream to the end", func(t *testing.T) {
		rt := &roundTrip{resp: respond(200, "text/event-stream; charset=utf-8", strings.NewReader(stream))}
		var got []string
		err := newTestClient(t, rt).Events(context.Background(), func(e apiv1.Event) error {
			got = append(got, e.ID+":"+e.Type)
			return nil
		})
		if err != nil || strings.Join(got, ",") != "e1:session.ready,e2:session.ended" {
			t.Fatalf("got %v, %v", got, err)
		}
		if a := rt.reqs[0].Header.Get("Accept"); a != "text/event-stream" {
			t.Fatalf("Accept %q", a)
		}
	})
	t.Run("callback error stops", func(t *testing.T) {
		rt := &roundTrip{resp: respond(200, "text/event-stream", strings.NewReader(stream))}
		stop := errors.New("stop")
		n := 0
		err := newTestClient(t, rt).Events(context.Background(), func(apiv1.Event) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("err %v after %d events", err, n)
		}
	})
	t.Run("bad event", func(t *testing.T) {
		rt := &roundTrip{resp: respond(200, "text/event-stream", strings.NewReader("data: nope\n\n"))}
		err := newTestClient(t, rt).Events(context.Background(), func(apiv1.Event) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "decode event") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("wrong content type", func(t *testing.T) {
		rt := &roundTrip{resp: respond(200, "application/json", strings.NewReader("{}"))}
		err := newTestClient(t, rt).Events(context.Background(), func(apiv1.Event) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "content type") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("api error", func(t *testing.T) {
		rt := &roundTrip{resp: respond(401, "application/json", strings.NewReader(`{"error":{"code":"unauthorized","message":"bad key"}}`))}
		err := newTestClient(t, rt).Events(context.Background(), func(apiv1.Event) error { return nil })
		if !HasCode(err, apiv1.CodeUnauthorized) {
			t.Fatalf("err %v", err)
		}
	})
}
