package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzCreateSessionBody feeds arbitrary bodies to the create-session parser:
// it must never panic, and must either accept the body with every field in
// range or refuse it with a 4xx API error.
func FuzzCreateSessionBody(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `{"avatar":"default"}`, `{"voice":"en-us","labels":{"team":"a"}}`,
		`{"idle_timeout_seconds":5,"max_duration_seconds":86400}`, `{"idle_timeout_seconds":4}`,
		`{"avatar":"../x"}`, `{"unknown":1}`, `{"avatar":1}`, `[]`, `{"avatar":"a"}{}`, `nul`,
		`{"labels":{"k":"` + strings.Repeat("v", 300) + `"}}`, `{"idle_timeout_seconds":1e99}`,
	} {
		f.Add(seed, "application/json")
	}
	f.Add(`{}`, "text/plain")
	f.Fuzz(func(t *testing.T, body, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/sessions", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		p, err := parseCreate(w, r)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 || ae.code == "" {
				t.Fatalf("body %q: error %v is not a 4xx API error", body, err)
			}
			return
		}
		if p.IdleTimeoutSeconds < minIdleTimeout || p.IdleTimeoutSeconds > maxIdleTimeout ||
			p.MaxDurationSeconds < minMaxDuration || p.MaxDurationSeconds > maxMaxDuration ||
			p.Avatar == "" || p.Voice == "" || len(p.Labels) > maxLabels {
			t.Fatalf("body %q accepted with out-of-range params %+v", body, p)
		}
	})
}
