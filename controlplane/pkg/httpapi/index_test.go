package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDemoAssets: the demo page, its assets and the browser client are
// served with their types; the demo page imports the client as a module;
// other names under /demo/ are not found.
func TestDemoAssets(t *testing.T) {
	a := New(Options{})
	tests := []struct {
		path   string
		status int
		ctype  string
		holds  string
	}{
		{"/", http.StatusOK, "text/html; charset=utf-8", `type="module"`},
		{"/demo/demo.js", http.StatusOK, "text/javascript; charset=utf-8", "from './avatarfleet.js'"},
		{"/demo/demo.css", http.StatusOK, "text/css; charset=utf-8", ""},
		{"/demo/catalog.js", http.StatusOK, "text/javascript; charset=utf-8", "export class Catalog"},
		{"/avatarfleet.js", http.StatusOK, "text/javascript; charset=utf-8", "export class AvatarViewer"},
		{"/demo/avatarfleet.js", http.StatusOK, "text/javascript; charset=utf-8", "export class AvatarViewer"},
		{"/demo/index.go", http.StatusNotFound, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			a.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if tt.ctype != "" && w.Header().Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type %q, want %q", w.Header().Get("Content-Type"), tt.ctype)
			}
			if !strings.Contains(w.Body.String(), tt.holds) {
				t.Errorf("body lacks %q", tt.holds)
			}
		})
	}
}
