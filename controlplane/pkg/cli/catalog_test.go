package cli

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

const (
	avatarsBody = `{"avatars":[` +
		`{"name":"bob","workers":1,"slots":2,"free_slots":2,"preview_url":"http://cp/v1/avatars/bob/preview"},` +
		`{"name":"default","workers":2,"slots":4,"free_slots":1,"preview_url":"http://cp/v1/avatars/default/preview"}]}`
	voicesBody = `{"voices":[{"name":"default","engines":["espeak","http"],"workers":2},{"name":"en-gb","workers":1}]}`
)

// TestCatalogVerbs: "avatars list" and "voices list" read their route and
// print a table or, with -o json, the API's own JSON.
func TestCatalogVerbs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		path     string
		body     string
		wantOut  string
		wantJSON any
	}{
		{"avatars table", []string{"avatars", "list"}, "/v1/avatars", avatarsBody, "" +
			"NAME     WORKERS  FREE  SLOTS  PREVIEW\n" +
			"bob      1        2     2      http://cp/v1/avatars/bob/preview\n" +
			"default  2        1     4      http://cp/v1/avatars/default/preview\n", nil},
		{"no avatars", []string{"avatars", "list"}, "/v1/avatars", `{"avatars":[]}`, "NAME  WORKERS  FREE  SLOTS  PREVIEW\n", nil},
		{"avatars json", []string{"-o", "json", "avatars", "list"}, "/v1/avatars", avatarsBody, "", &apiv1.AvatarList{}},
		{"voices table", []string{"voices", "list"}, "/v1/voices", voicesBody, "" +
			"NAME     WORKERS  ENGINES\n" +
			"default  2        espeak,http\n" +
			"en-gb    1        -\n", nil},
		{"voices json", []string{"voices", "list", "-o", "json"}, "/v1/voices", voicesBody, "", &apiv1.VoiceList{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &script{answer: func(r *http.Request, _ int) (int, string) {
				if r.Method != http.MethodGet || r.URL.Path != tt.path {
					return 404, `{"error":{"code":"not_found","message":"wrong route"}}`
				}
				return 200, tt.body
			}}
			r := runCLI(t, rt, map[string]string{EnvAPIKey: "k"}, tt.args...)
			if r.code != ExitOK || rt.count() != 1 {
				t.Fatalf("code %d, %d requests, stderr %q", r.code, rt.count(), r.stderr)
			}
			if got := rt.reqs[0].Header.Get("Authorization"); got != "Bearer k" {
				t.Errorf("Authorization %q", got)
			}
			if tt.wantJSON == nil {
				if r.stdout != tt.wantOut {
					t.Fatalf("stdout\n%s\nwant\n%s", r.stdout, tt.wantOut)
				}
				return
			}
			// -o json prints what the API sent, field for field.
			want := reflect.New(reflect.TypeOf(tt.wantJSON).Elem()).Interface()
			if err := json.Unmarshal([]byte(tt.body), want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(r.stdout), tt.wantJSON); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
			}
			if !reflect.DeepEqual(tt.wantJSON, want) {
				t.Fatalf("printed %+v, want %+v", tt.wantJSON, want)
			}
		})
	}
}

// TestCatalogErrors: API errors reach stderr with their code.
func TestCatalogErrors(t *testing.T) {
	rt := &script{answer: func(*http.Request, int) (int, string) {
		return 401, `{"error":{"code":"unauthorized","message":"missing bearer API key"}}`
	}}
	r := runCLI(t, rt, nil, "avatars", "list")
	if r.code != ExitError || r.stderr != "error: unauthorized: missing bearer API key\n" || r.stdout != "" {
		t.Fatalf("code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, rt, nil, "avatars", "list", "extra")
	if r.code == ExitOK {
		t.Fatalf("extra argument accepted: %+v", r)
	}
}
