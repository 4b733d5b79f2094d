package httpapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
)

const testKey = "test-sessions-key-0123456789"

// slowServer serves the API over loopback with a short body budget.
func slowServer(t *testing.T, timeout time.Duration, rate int64) (*httptest.Server, *viewertoken.Signer) {
	t.Helper()
	keys := &auth.Keys{}
	if err := keys.Add(testKey, auth.ScopeSessions); err != nil {
		t.Fatal(err)
	}
	ks, err := viewertoken.NewKeySet(viewertoken.Key{ID: "k", Secret: []byte(strings.Repeat("s", 32))})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := viewertoken.NewSigner(ks, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	api := New(Options{Keys: keys, Tokens: signer, BodyTimeout: timeout, BodyMinRate: rate})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv, signer
}

// trickle sends a request whose body of n bytes comes in chunks of chunk
// bytes every gap, until the server answers, and returns the answer and
// how long it took.
func trickle(t *testing.T, addr, head string, body []byte, chunk int, gap time.Duration) (*http.Response, []byte, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "%sContent-Length: %d\r\n\r\n", head, len(body)); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for off := 0; off < len(body); off += chunk {
			if _, err := conn.Write(body[off:min(off+chunk, len(body))]); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(gap):
			}
		}
	}()
	defer func() { close(stop); <-done }()
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if resp.StatusCode == http.StatusRequestTimeout {
		// The server hangs up: the rest of the body is not waited for.
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("connection still open after 408")
		}
	}
	return resp, b, took
}

func code(t *testing.T, b []byte) string {
	t.Helper()
	var e apiv1.ErrorBody
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return e.Error.Code
}

// TestSlowBody: a body sent a byte every 2 s gets 408 request_timeout
// within the budget (1 s here) instead of holding the request open,
// on JSON routes and on WHEP/WHIP offers; a body sent steadily at the
// minimum rate arrives whole even though it takes longer than the budget.
func TestSlowBody(t *testing.T) {
	const budget = time.Second
	srv, signer := slowServer(t, budget, 2000)
	addr := strings.TrimPrefix(srv.URL, "http://")
	tok, err := signer.Issue("sess_1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, head string
	}{
		{"create session", "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testKey + "\r\nContent-Type: application/json\r\n"},
		{"tokens", "POST /v1/sessions/sess_1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testKey + "\r\nContent-Type: application/json\r\n"},
		{"WHEP offer", "POST /v1/sessions/sess_1/whep HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: application/sdp\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b, took := trickle(t, addr, tt.head, []byte(`{"grants":["subscribe"]}`), 1, 2*time.Second)
			if resp.StatusCode != http.StatusRequestTimeout || code(t, b) != apiv1.CodeRequestTimeout {
				t.Fatalf("slow body: %d %s", resp.StatusCode, b)
			}
			// Generous bound for a busy machine; the body alone would take 48 s.
			if took < budget || took > budget+10*time.Second {
				t.Fatalf("408 after %s, want about %s", took, budget)
			}
		})
	}

	t.Run("steady body longer than the budget", func(t *testing.T) {
		// 3,000 bytes, 300 every 150 ms (2,000 bytes/s): 1.5 s of sending,
		// past the 1 s budget but within 1 s + n/2,000 s at every byte n.
		body := []byte(`{"text":""` + strings.Repeat(" ", 2988) + `}`)
		resp, b, took := trickle(t, addr, "POST /v1/sessions/sess_1/speak HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testKey+"\r\nContent-Type: application/json\r\n",
			body, 300, 150*time.Millisecond)
		if resp.StatusCode != http.StatusBadRequest || code(t, b) != apiv1.CodeInvalidRequest {
			t.Fatalf("steady body: %d %s, want the body read whole (400 for the empty text)", resp.StatusCode, b)
		}
		if took < budget {
			t.Fatalf("body took %s, want longer than the %s budget", took, budget)
		}
	})
}

func TestParseTokenRequest(t *testing.T) {
	n := func(v int) *int { return &v }
	tests := []struct {
		name   string
		req    apiv1.CreateTokenRequest
		grants []viewertoken.Grant // nil: 400 expected
		ttl    time.Duration
	}{
		{"subscribe, default ttl", apiv1.CreateTokenRequest{Grants: []string{"subscribe"}}, []viewertoken.Grant{viewertoken.Subscribe}, time.Hour},
		{"publish", apiv1.CreateTokenRequest{Grants: []string{"publish"}, TTLSeconds: n(60)}, []viewertoken.Grant{viewertoken.Publish}, time.Minute},
		{"both, canonical order, folded", apiv1.CreateTokenRequest{Grants: []string{"publish", "subscribe", "publish"}, TTLSeconds: n(86400)},
			[]viewertoken.Grant{viewertoken.Subscribe, viewertoken.Publish}, 24 * time.Hour},
		{"no grants", apiv1.CreateTokenRequest{}, nil, 0},
		{"empty grants", apiv1.CreateTokenRequest{Grants: []string{}}, nil, 0},
		{"unknown grant", apiv1.CreateTokenRequest{Grants: []string{"subscribe", "admin"}}, nil, 0},
		{"empty grant", apiv1.CreateTokenRequest{Grants: []string{""}}, nil, 0},
		{"case matters", apiv1.CreateTokenRequest{Grants: []string{"Publish"}}, nil, 0},
		{"too many", apiv1.CreateTokenRequest{Grants: strings.Split(strings.Repeat("publish,", 9)[:71], ",")}, nil, 0},
		{"ttl too short", apiv1.CreateTokenRequest{Grants: []string{"publish"}, TTLSeconds: n(59)}, nil, 0},
		{"ttl too long", apiv1.CreateTokenRequest{Grants: []string{"publish"}, TTLSeconds: n(86401)}, nil, 0},
		{"ttl negative", apiv1.CreateTokenRequest{Grants: []string{"publish"}, TTLSeconds: n(-1)}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grants, ttl, err := parseTokenRequest(tt.req, time.Hour)
			if tt.grants == nil {
				ae, ok := err.(*apiError)
				if !ok || ae.status != 400 || ae.code != apiv1.CodeInvalidRequest {
					t.Fatalf("got %v %s %v, want 400 invalid_request", grants, ttl, err)
				}
				return
			}
			if err != nil || fmt.Sprint(grants) != fmt.Sprint(tt.grants) || ttl != tt.ttl {
				t.Fatalf("got %v %s %v, want %v %s", grants, ttl, err, tt.grants, tt.ttl)
			}
		})
	}
}
