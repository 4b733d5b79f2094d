package livekitroom

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func jwt(header string) string {
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(header)) + "." + e([]byte(`{"sub":"avatar"}`)) + "." + e([]byte("signature"))
}

func TestValidate(t *testing.T) {
	good := jwt(`{"alg":"HS256","typ":"JWT"}`)
	for _, tc := range []struct {
		name, url, token string
		ok               bool
	}{
		{"wss", "wss://agents.example.com", good, true},
		{"ws with port and path", "ws://127.0.0.1:7880/rtc", good, true},
		{"https", "https://lk.example.com", good, true},
		{"http upper-case scheme", "HTTP://lk.example.com", good, true},
		{"no url", "", good, false},
		{"ftp", "ftp://lk.example.com", good, false},
		{"no scheme", "lk.example.com", good, false},
		{"no host", "wss://", good, false},
		{"user info", "wss://u:p@lk.example.com", good, false},
		{"query", "wss://lk.example.com?access_token=x", good, false},
		{"fragment", "wss://lk.example.com#x", good, false},
		{"space", "wss://lk.example.com/ x", good, false},
		{"long url", "wss://lk.example.com/" + strings.Repeat("a", MaxURL), good, false},
		{"no token", "wss://lk.example.com", "", false},
		{"two parts", "wss://lk.example.com", "a.b", false},
		{"not base64", "wss://lk.example.com", "a.b.c!", false},
		{"header not JSON", "wss://lk.example.com", jwt("nope"), false},
		{"header without alg", "wss://lk.example.com", jwt(`{"typ":"JWT"}`), false},
		{"long token", "wss://lk.example.com", good + strings.Repeat("A", MaxToken), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.url, tc.token)
			if tc.ok != (err == nil) {
				t.Fatalf("Validate(%q) = %v, want ok=%v", tc.url, err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				if tc.token != "" && len(tc.token) > 8 && strings.Contains(err.Error(), tc.token) {
					t.Errorf("error %q holds the token", err)
				}
			}
		})
	}
}
