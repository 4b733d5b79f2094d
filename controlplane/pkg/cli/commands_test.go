package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
)

func TestURLAndKeyResolution(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		flags    []string
		wantURL  string
		wantAuth string
	}{
		{"defaults", nil, nil, "http://127.0.0.1:8080/v1/workers", ""},
		{"env", map[string]string{EnvURL: "https://cp.example/api/", EnvAPIKey: "envkey"}, nil, "https://cp.example/api/v1/workers", "Bearer envkey"},
		{"flags win", map[string]string{EnvURL: "https://cp.example", EnvAPIKey: "envkey"},
			[]string{"--url", "http://other:1", "--api-key", "flagkey"}, "http://other:1/v1/workers", "Bearer flagkey"},
		{"empty flag key wins over env", map[string]string{EnvAPIKey: "envkey"}, []string{"--api-key="}, "http://127.0.0.1:8080/v1/workers", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &script{answer: func(*http.Request, int) (int, string) { return 200, `{"workers":[]}` }}
			r := runCLI(t, rt, tt.env, append(tt.flags, "workers", "list")...)
			if r.code != ExitOK || rt.count() != 1 {
				t.Fatalf("code %d, %d requests, stderr %q", r.code, rt.count(), r.stderr)
			}
			req := rt.reqs[0]
			if req.URL.String() != tt.wantURL || req.Header.Get("Authorization") != tt.wantAuth {
				t.Errorf("request %s auth %q, want %s %q", req.URL, req.Header.Get("Authorization"), tt.wantURL, tt.wantAuth)
			}
		})
	}
}

func TestAPIErrorOutput(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		status     int
		body       string
		wantStderr string
	}{
		{"not found", []string{"sessions", "get", "nope"}, 404,
			`{"error":{"code":"not_found","message":"session nope not found"}}`, "error: not_found: session nope not found\n"},
		{"forbidden", []string{"workers", "list"}, 403,
			`{"error":{"code":"forbidden","message":"key lacks the admin scope"}}`, "error: forbidden: key lacks the admin scope\n"},
		{"non-JSON", []string{"sessions", "list"}, 502, "", "error: http_502: bad gateway\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &script{answer: func(*http.Request, int) (int, string) { return tt.status, tt.body }}
			r := runCLI(t, rt, nil, tt.args...)
			if r.code != ExitError || r.stderr != tt.wantStderr || r.stdout != "" {
				t.Fatalf("code %d stdout %q stderr %q, want %d and %q", r.code, r.stdout, r.stderr, ExitError, tt.wantStderr)
			}
		})
	}
}

// TestRootCommandError checks what an embedding caller (an integration
// test) gets from ExecuteContext: the printed error and an error that
// still unwraps to the *apiclient.APIError.
func TestRootCommandError(t *testing.T) {
	rt := &script{answer: func(*http.Request, int) (int, string) {
		return 503, `{"error":{"code":"no_capacity","message":"no free slot"}}`
	}}
	var stdout, stderr strings.Builder
	cmd := NewRootCommand(Options{Stdout: &stdout, Stderr: &stderr, HTTPClient: &http.Client{Transport: rt}})
	cmd.SetArgs([]string{"sessions", "create", "--avatar", "alice"})
	err := cmd.ExecuteContext(context.Background())
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.Code != "no_capacity" || ExitCode(err) != ExitError {
		t.Fatalf("err %v (exit %d)", err, ExitCode(err))
	}
	if stderr.String() != "error: no_capacity: no free slot\n" || stdout.String() != "" {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

func TestCreateRequestAndJSONOutput(t *testing.T) {
	const session = `{"id":"s1","state":"placing","worker_id":"w1","gpu":0,"avatar":"alice","voice":"v","labels":{"a":"1","b":"x=y"},` +
		`"idle_timeout_seconds":30,"max_duration_seconds":3600,"created_at":"2026-03-04T05:06:07Z",` +
		`"restart_policy":"never","replace_timeout_seconds":30,"moves":0,"whep_url":"http://cp/v1/sessions/s1/whep?a=b&c=d","viewer_token":"t"}`
	var gotBody string
	rt := &script{answer: func(r *http.Request, _ int) (int, string) {
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		return 201, session
	}}
	r := runCLI(t, rt, nil, "-o", "json", "sessions", "create", "--avatar", "alice", "--voice", "v",
		"--label", "a=1", "--label", "b=x=y", "--idle-timeout", "30s", "--max-duration", "1h", "--idempotency-key", "k1",
		"--restart-policy", "never", "--replace-timeout", "30s")
	if r.code != ExitOK {
		t.Fatalf("code %d stderr %q", r.code, r.stderr)
	}
	req := rt.reqs[0]
	if req.Method != "POST" || req.URL.Path != "/v1/sessions" || req.Header.Get("Idempotency-Key") != "k1" {
		t.Errorf("request %s %s key %q", req.Method, req.URL.Path, req.Header.Get("Idempotency-Key"))
	}
	if want := `{"avatar":"alice","voice":"v","labels":{"a":"1","b":"x=y"},"idle_timeout_seconds":30,"max_duration_seconds":3600,` +
		`"restart_policy":"never","replace_timeout_seconds":30}`; gotBody != want {
		t.Errorf("body %s, want %s", gotBody, want)
	}
	var printed, sent map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &printed); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	_ = json.Unmarshal([]byte(session), &sent)
	if fmt.Sprint(printed) != fmt.Sprint(sent) || !strings.Contains(r.stdout, "\n  \"id\": \"s1\",\n") || !strings.Contains(r.stdout, "a=b&c=d") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

func TestListJSONKeepsEnvelope(t *testing.T) {
	rt := &script{answer: func(*http.Request, int) (int, string) { return 200, `{"sessions":null}` }}
	r := runCLI(t, rt, nil, "sessions", "list", "-o", "json")
	if r.code != ExitOK || r.stdout != "{\n  \"sessions\": []\n}\n" {
		t.Fatalf("code %d stdout %q", r.code, r.stdout)
	}
}

func TestDeleteAndUndrain(t *testing.T) {
	rt := &script{answer: func(r *http.Request, _ int) (int, string) {
		if r.Method == http.MethodDelete {
			return 204, ""
		}
		return 200, `{"id":"w1","state":"active","sessions":0}`
	}}
	if r := runCLI(t, rt, nil, "sessions", "delete", "s1"); r.code != ExitOK || r.stdout != "session s1: deleted\n" {
		t.Fatalf("delete: %+v", r)
	}
	if r := runCLI(t, rt, nil, "workers", "undrain", "w1"); r.code != ExitOK || r.stdout != "worker w1: undrained, open to new sessions\n" {
		t.Fatalf("undrain: %+v", r)
	}
	if got := rt.reqs[1].Method + " " + rt.reqs[1].URL.Path; got != "POST /v1/workers/w1/undrain" {
		t.Fatalf("undrain request %s", got)
	}
}

// drainScript answers POST drain with 202 and no body, then each GET with
// the next of steps (the last repeats): a sessions count, or an HTTP error.
func drainScript(steps ...string) *script {
	i := 0
	return &script{answer: func(r *http.Request, _ int) (int, string) {
		if r.Method == http.MethodPost {
			return 202, ""
		}
		step := steps[min(i, len(steps)-1)]
		i++
		switch step {
		case "404":
			return 404, `{"error":{"code":"not_found","message":"no worker w1"}}`
		case "503":
			return 503, `{"error":{"code":"unavailable","message":"etcd unreachable"}}`
		case "403":
			return 403, `{"error":{"code":"forbidden","message":"no admin scope"}}`
		case "active":
			return 200, `{"id":"w1","state":"active","sessions":2}`
		}
		return 200, `{"id":"w1","state":"draining","sessions":` + step + `}`
	}}
}

func TestDrainWait(t *testing.T) {
	tests := []struct {
		name       string
		steps      []string
		extra      []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name: "counts down to zero", steps: []string{"3", "3", "2", "2", "0"}, wantCode: ExitOK,
			wantStdout: "worker w1: 3 sessions left\nworker w1: 2 sessions left\nworker w1: 0 sessions left\nworker w1: drained\n",
		},
		{
			name: "already empty", steps: []string{"0"}, wantCode: ExitOK,
			wantStdout: "worker w1: 0 sessions left\nworker w1: drained\n",
		},
		{
			name: "times out", steps: []string{"1"}, extra: []string{"--timeout", "150ms"}, wantCode: ExitTimeout,
			wantStdout: "worker w1: 1 session left\n",
			wantStderr: "error: worker w1: still draining after 150ms, 1 session left\n",
		},
		{
			name: "transient errors are warned once and waited out", steps: []string{"2", "503", "503", "1", "0"}, wantCode: ExitOK,
			wantStdout: "worker w1: 2 sessions left\nworker w1: 1 session left\nworker w1: 0 sessions left\nworker w1: drained\n",
			wantStderr: "warning: unavailable: etcd unreachable (still waiting)\n",
		},
		{
			name: "worker gone", steps: []string{"1", "404"}, wantCode: ExitOK,
			wantStdout: "worker w1: 1 session left\nworker w1: no longer registered\nworker w1: drained\n",
		},
		{
			name: "undrained meanwhile", steps: []string{"2", "active"}, wantCode: ExitError,
			wantStdout: "worker w1: 2 sessions left\n",
			wantStderr: "error: worker w1 was undrained while waiting (2 sessions left)\n",
		},
		{
			name: "first look fails, then waits a poll interval", steps: []string{"503", "0"}, wantCode: ExitOK,
			wantStdout: "worker w1: 0 sessions left\nworker w1: drained\n",
			wantStderr: "warning: unavailable: etcd unreachable (still waiting)\n",
		},
		{
			name: "permanent error stops", steps: []string{"403"}, wantCode: ExitError,
			wantStderr: "error: forbidden: no admin scope\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := drainScript(tt.steps...)
			args := append([]string{"workers", "drain", "w1", "--wait", "--poll-interval", "1ms"}, tt.extra...)
			r := runCLI(t, rt, nil, args...)
			if r.code != tt.wantCode || r.stdout != tt.wantStdout || r.stderr != tt.wantStderr {
				t.Fatalf("got code %d\nstdout %q\nstderr %q\nwant code %d\nstdout %q\nstderr %q",
					r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
			if first := rt.reqs[0]; first.Method != "POST" || first.URL.Path != "/v1/workers/w1/drain" {
				t.Fatalf("first request %s %s", first.Method, first.URL.Path)
			}
		})
	}
}

func TestDrainWaitJSON(t *testing.T) {
	r := runCLI(t, drainScript("1", "0"), nil, "-o", "json", "workers", "drain", "w1", "--wait", "--poll-interval", "1ms")
	if r.code != ExitOK || r.stderr != "worker w1: 1 session left\nworker w1: 0 sessions left\n" ||
		!strings.Contains(r.stdout, `"state": "draining"`) {
		t.Fatalf("%+v", r)
	}
}

func TestDrainWaitHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var stdout, stderr strings.Builder
	code := Run(ctx, Options{Stdout: &stdout, Stderr: &stderr, HTTPClient: &http.Client{Transport: drainScript("5")}},
		[]string{"workers", "drain", "w1", "--wait", "--poll-interval", "5ms"})
	if code != ExitError || !strings.HasPrefix(stderr.String(), "error: timed out: context deadline exceeded") {
		t.Fatalf("code %d stderr %q", code, stderr.String())
	}
}

func TestDrainNoWait(t *testing.T) {
	r := runCLI(t, drainScript("4"), nil, "workers", "drain", "w1")
	if r.code != ExitOK || r.stdout != "worker w1: draining, 4 sessions left\n" {
		t.Fatalf("%+v", r)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("unknown command"), ExitUsage},
		{&usageError{msg: "x"}, ExitUsage},
		{&runError{code: ExitError}, ExitError},
		{fmt.Errorf("wrapped: %w", &runError{code: ExitTimeout}), ExitTimeout},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestDescribe(t *testing.T) {
	err := fmt.Errorf("create session: %w", &apiclient.APIError{Status: 503, Code: "no_capacity", Message: "no free slot", RetryAfter: 5 * time.Second})
	if got, want := describe(err), "no_capacity: no free slot (retry after 5s)"; got != want {
		t.Fatalf("describe = %q, want %q", got, want)
	}
}
