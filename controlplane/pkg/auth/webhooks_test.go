package auth

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testSecret(n int) string {
	return WebhookSecretPrefix + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n))
}

func TestParseWebhooks(t *testing.T) {
	const k1, k2 = "aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"
	good := testSecret(32)
	many := ""
	for i := range MaxWebhooksPerKey + 1 {
		many += "  - {url: \"https://h.example/" + string(rune('a'+i)) + "\", secret: \"" + good + "\"}\n"
	}
	tests := []struct {
		name    string
		hooks   string // the webhooks: block of k1
		wantErr string // "" parses
		urls    int
	}{
		{"none", "", "", 0},
		{"https and http", "  webhooks:\n  - {url: \"https://h.example/hook\", secret: \"" + good + "\"}\n  - {url: \"http://10.0.0.1:8080/x?y=1\", secret: \"" + good + "\"}\n", "", 2},
		{"secret without prefix", "  webhooks:\n  - {url: \"https://h.example/\", secret: \"" + strings.TrimPrefix(good, WebhookSecretPrefix) + "\"}\n", "", 1},
		{"ftp url", "  webhooks:\n  - {url: \"ftp://h.example/\", secret: \"" + good + "\"}\n", "http or https", 0},
		{"relative url", "  webhooks:\n  - {url: \"/hook\", secret: \"" + good + "\"}\n", "http or https", 0},
		{"no host", "  webhooks:\n  - {url: \"https:///hook\", secret: \"" + good + "\"}\n", "no host", 0},
		{"credentials in url", "  webhooks:\n  - {url: \"https://u:p@h.example/\", secret: \"" + good + "\"}\n", "credentials", 0},
		{"fragment", "  webhooks:\n  - {url: \"https://h.example/#x\", secret: \"" + good + "\"}\n", "fragment", 0},
		{"short secret", "  webhooks:\n  - {url: \"https://h.example/\", secret: \"" + testSecret(16) + "\"}\n", "16 bytes decoded", 0},
		{"long secret", "  webhooks:\n  - {url: \"https://h.example/\", secret: \"" + testSecret(65) + "\"}\n", "65 bytes decoded", 0},
		{"not base64", "  webhooks:\n  - {url: \"https://h.example/\", secret: \"whsec_not*base64\"}\n", "base64", 0},
		{"no secret", "  webhooks:\n  - {url: \"https://h.example/\"}\n", "no secret", 0},
		{"both secrets", "  webhooks:\n  - {url: \"https://h.example/\", secret: \"" + good + "\", secret_file: x}\n", "exclusive", 0},
		{"missing secret file", "  webhooks:\n  - {url: \"https://h.example/\", secret_file: /nonexistent/secret}\n", "secret_file", 0},
		{"duplicate url", "  webhooks:\n  - {url: \"https://h.example/\", secret: \"" + good + "\"}\n  - {url: \"https://h.example/\", secret: \"" + good + "\"}\n", "twice", 0},
		{"too many", "  webhooks:\n" + many, "at most", 0},
		{"unknown field", "  webhooks:\n  - {url: \"https://h.example/\", secret: \"" + good + "\", retries: 3}\n", "unknown field", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := Parse([]byte("keys:\n- key: " + k1 + "\n  scopes: [sessions]\n" + tt.hooks + "- key: " + k2 + "\n  scopes: [admin]\n"))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), strings.TrimPrefix(good, WebhookSecretPrefix)) || strings.Contains(err.Error(), "--") {
					t.Errorf("error %q names a secret or a flag", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			hooks := ks.Webhooks()
			if len(hooks) != tt.urls {
				t.Fatalf("%d webhooks, want %d", len(hooks), tt.urls)
			}
			for _, h := range hooks {
				if h.Owner != Fingerprint(k1) || h.AllEvents || len(h.Secret) != 32 {
					t.Errorf("webhook %+v: want owner %s, own events only, a 32-byte key", h, Fingerprint(k1))
				}
			}
		})
	}
}

func TestLoadFileWebhookSecretFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.secret"), []byte(testSecret(24)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys.yaml")
	body := "keys:\n- key: aaaaaaaaaaaaaaaaaaaa\n  scopes: [admin]\n  webhooks:\n  - {url: \"https://h.example/\", secret_file: hook.secret}\n"
	if err := os.WriteFile(keys, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ks, err := LoadFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	hooks := ks.Webhooks()
	if len(hooks) != 1 || !bytes.Equal(hooks[0].Secret, bytes.Repeat([]byte{7}, 24)) || !hooks[0].AllEvents {
		t.Fatalf("webhooks %+v: want one, its key from the file, all events for an admin key", hooks)
	}
}

func TestAddWebhook(t *testing.T) {
	var ks Keys
	if err := ks.Add("aaaaaaaaaaaaaaaaaaaa", ScopeSessions); err != nil {
		t.Fatal(err)
	}
	if err := ks.AddWebhook("aaaaaaaaaaaaaaaaaaaa", "https://h.example/1", testSecret(24)); err != nil {
		t.Fatal(err)
	}
	if err := ks.AddWebhook("aaaaaaaaaaaaaaaaaaaa", "https://h.example/1", testSecret(24)); err == nil {
		t.Error("the same URL twice was accepted")
	}
	if err := ks.AddWebhook("bbbbbbbbbbbbbbbbbbbb", "https://h.example/2", testSecret(24)); err == nil {
		t.Error("a webhook of no key was accepted")
	}
	if err := ks.AddWebhook("aaaaaaaaaaaaaaaaaaaa", "https://h.example/2", testSecret(24)); err != nil {
		t.Fatal(err)
	}
	if hooks := ks.Webhooks(); len(hooks) != 2 || hooks[1].URL != "https://h.example/2" {
		t.Fatalf("webhooks %+v", hooks)
	}
}
