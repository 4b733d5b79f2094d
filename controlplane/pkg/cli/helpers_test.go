package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// script is an http.RoundTripper that answers from a function and records
// the requests: it drives the commands without any server.
type script struct {
	mu     sync.Mutex
	reqs   []*http.Request
	answer func(r *http.Request, n int) (status int, body string)
}

func (s *script) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	n := len(s.reqs)
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	status, body := 500, `{"error":{"code":"internal","message":"no answer scripted"}}`
	if s.answer != nil {
		status, body = s.answer(r, n)
	}
	h := http.Header{}
	if body != "" {
		h.Set("Content-Type", "application/json")
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// result is the outcome of one avatarctl run.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs one command line in-process with env and transport rt.
func runCLI(t *testing.T, rt http.RoundTripper, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), Options{
		Stdout:     &stdout,
		Stderr:     &stderr,
		Getenv:     func(k string) string { return env[k] },
		HTTPClient: &http.Client{Transport: rt},
	}, args)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}
