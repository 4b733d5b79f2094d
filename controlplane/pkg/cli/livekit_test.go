package cli

import (
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCreateWithLiveKit: "sessions create --livekit-url U
// --livekit-token-file F" sends {"livekit":{"url","token"}} with the
// file's token (white space trimmed), checked before any request; the
// table shows the room's URL and state.
func TestCreateWithLiveKit(t *testing.T) {
	e := base64.RawURLEncoding.EncodeToString
	tok := e([]byte(`{"alg":"HS256"}`)) + "." + e([]byte(`{"sub":"avatar"}`)) + "." + e([]byte("sig"))
	dir := t.TempDir()
	good, bad, big := filepath.Join(dir, "good"), filepath.Join(dir, "bad"), filepath.Join(dir, "big")
	for p, c := range map[string]string{good: tok + "\n", bad: "not a token\n", big: strings.Repeat("a", 5000)} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, url, file, wantErr string
	}{
		{"bad token", "wss://lk.example.com", bad, "livekit token: invalid livekit room: not a JWT"},
		{"token too big", "wss://lk.example.com", big, "more than 4096 bytes"},
		{"bad url", "ftp://lk.example.com", good, "livekit url: invalid livekit room: scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := &script{}
			r := runCLI(t, rt, nil, "sessions", "create", "--livekit-url", tc.url, "--livekit-token-file", tc.file)
			if r.code != ExitUsage || !strings.Contains(r.stderr, tc.wantErr) || rt.count() != 0 {
				t.Errorf("code %d stderr %q requests %d, want a usage error %q and no request", r.code, r.stderr, rt.count(), tc.wantErr)
			}
		})
	}
	var gotBody string
	rt := &script{answer: func(r *http.Request, _ int) (int, string) {
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		return 201, `{"id":"s1","state":"starting","livekit":{"url":"wss://lk.example.com","state":"joining"}}`
	}}
	r := runCLI(t, rt, nil, "sessions", "create", "--livekit-url", "wss://lk.example.com", "--livekit-token-file", good)
	if r.code != ExitOK {
		t.Fatalf("code %d stderr %q", r.code, r.stderr)
	}
	if want := `{"livekit":{"url":"wss://lk.example.com","token":"` + tok + `"}}`; gotBody != want {
		t.Errorf("body %s, want %s", gotBody, want)
	}
	if !strings.Contains(r.stdout, "wss://lk.example.com (joining)") || strings.Contains(r.stdout, tok) {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}
