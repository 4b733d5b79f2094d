package apiclient

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// recorded builds a real *http.Response through an httptest.ResponseRecorder.
func recorded(status int, header map[string]string, body string) *http.Response {
	rec := httptest.NewRecorder()
	for k, v := range header {
		rec.Header().Set(k, v)
	}
	rec.WriteHeader(status)
	_, _ = rec.WriteString(body)
	return rec.Result()
}

func TestErrorFromResponse(t *testing.T) {
	jsonCT := map[string]string{"Content-Type": "application/json"}
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		wantCode   string
		wantMsg    string
		wantRetry  time.Duration
		wantPrefix bool // wantMsg is a prefix only
	}{
		{
			name: "envelope", status: 404, header: jsonCT,
			body:     `{"error":{"code":"not_found","message":"session s1 not found"}}`,
			wantCode: "not_found", wantMsg: "session s1 not found",
		},
		{
			name: "no capacity with retry-after seconds", status: 503,
			header:   map[string]string{"Content-Type": "application/json", "Retry-After": "5"},
			body:     `{"error":{"code":"no_capacity","message":"no free slot"}}` + "\n",
			wantCode: "no_capacity", wantMsg: "no free slot", wantRetry: 5 * time.Second,
		},
		{
			name: "envelope with extra fields", status: 400, header: jsonCT,
			body:     `{"error":{"code":"invalid_request","message":"bad avatar","field":"avatar"},"request_id":"x"}`,
			wantCode: "invalid_request", wantMsg: "bad avatar",
		},
		{
			name: "envelope without message", status: 403, header: jsonCT,
			body:     `{"error":{"code":"forbidden"}}`,
			wantCode: "forbidden", wantMsg: "forbidden",
		},
		{
			name: "json without envelope", status: 500, header: jsonCT,
			body:     `{"message":"boom"}`,
			wantCode: "http_500", wantMsg: `{"message":"boom"}`,
		},
		{
			name: "plain text (net/http default)", status: 404,
			header:   map[string]string{"Content-Type": "text/plain; charset=utf-8"},
			body:     "404 page not found\n",
			wantCode: "http_404", wantMsg: "404 page not found",
		},
		{
			name: "multi-line text keeps first line", status: 502,
			header:   map[string]string{"Content-Type": "text/plain"},
			body:     "upstream connect error\ndetails...\n",
			wantCode: "http_502", wantMsg: "upstream connect error",
		},
		{
			name: "html proxy page", status: 502,
			header:   map[string]string{"Content-Type": "text/html"},
			body:     "<html><body><h1>502 Bad Gateway</h1></body></html>",
			wantCode: "http_502", wantMsg: "bad gateway",
		},
		{
			name: "empty body", status: 401,
			wantCode: "http_401", wantMsg: "unauthorized",
		},
		{
			name: "unknown status", status: 599,
			wantCode: "http_599", wantMsg: "HTTP status 599",
		},
		{
			name: "long text is cut", status: 500, header: map[string]string{"Content-Type": "text/plain"},
			body:     strings.Repeat("é", 500),
			wantCode: "http_500", wantMsg: strings.Repeat("é", 100), wantPrefix: true,
		},
		{
			name: "oversized envelope falls back", status: 400, header: jsonCT,
			body:     `{"error":{"code":"invalid_request","message":"` + strings.Repeat("x", maxErrorBytes) + `"}}`,
			wantCode: "http_400", wantMsg: "{", wantPrefix: true,
		},
		{
			name: "bad retry-after ignored", status: 503,
			header:   map[string]string{"Content-Type": "application/json", "Retry-After": "soon"},
			body:     `{"error":{"code":"no_capacity","message":"m"}}`,
			wantCode: "no_capacity", wantMsg: "m",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ae := errorFromResponse(recorded(tt.status, tt.header, tt.body))
			if ae.Status != tt.status || ae.Code != tt.wantCode || ae.RetryAfter != tt.wantRetry {
				t.Fatalf("got status %d code %q retry %v, want %d %q %v",
					ae.Status, ae.Code, ae.RetryAfter, tt.status, tt.wantCode, tt.wantRetry)
			}
			if tt.wantPrefix {
				if !strings.HasPrefix(ae.Message, tt.wantMsg) || len(ae.Message) > maxFallbackMessage+len("…") {
					t.Fatalf("message %q: want prefix %q and at most %d bytes", ae.Message, tt.wantMsg, maxFallbackMessage)
				}
			} else if ae.Message != tt.wantMsg {
				t.Fatalf("message %q, want %q", ae.Message, tt.wantMsg)
			}
		})
	}
}

func TestAPIErrorAs(t *testing.T) {
	var err error = &APIError{Status: 404, Code: "not_found", Message: "no such session"}
	err = fmt.Errorf("get session %q: %w", "s1", err)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("errors.As failed on %v", err)
	}
	if got, want := err.Error(), `get session "s1": not_found: no such session`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if !HasCode(err, "not_found") || HasCode(err, "conflict") || HasCode(errors.New("x"), "not_found") {
		t.Fatal("HasCode mismatch")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{" 7 ", 7 * time.Second},
		{"120", 2 * time.Minute},
		{"99999999999999999", time.Duration(int64(1<<63-1)/int64(time.Second)) * time.Second},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-30 * time.Second).Format(http.TimeFormat), 0},
		{"1.5", 0},
		{"tomorrow", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
