package cli

import (
	"io"
	"testing"
)

// TestDrainMigrateSendsTheWish checks that --migrate puts {"migrate":true}
// in the drain request and that a plain drain sends no body.
func TestDrainMigrateSendsTheWish(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantBody string
		wantType string
	}{
		{"plain", []string{"workers", "drain", "w1"}, "", ""},
		{"migrate", []string{"workers", "drain", "w1", "--migrate"}, `{"migrate":true}`, "application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := drainScript("3")
			r := runCLI(t, rt, nil, tt.args...)
			if r.code != ExitOK || r.stdout != "worker w1: draining, 3 sessions left\n" {
				t.Fatalf("%+v", r)
			}
			req := rt.reqs[0]
			if req.Method != "POST" || req.URL.Path != "/v1/workers/w1/drain" {
				t.Fatalf("request %s %s", req.Method, req.URL.Path)
			}
			body := ""
			if req.GetBody != nil {
				rc, err := req.GetBody()
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(rc)
				body = string(b)
			}
			if body != tt.wantBody || req.Header.Get("Content-Type") != tt.wantType {
				t.Fatalf("body %q (%q), want %q (%q)", body, req.Header.Get("Content-Type"), tt.wantBody, tt.wantType)
			}
		})
	}
}
