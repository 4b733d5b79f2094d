package auth

import (
	"errors"
	"testing"
)

func TestAuthenticate(t *testing.T) {
	var ks Keys
	if err := ks.Add("sessions-key-0123456789", ScopeSessions); err != nil {
		t.Fatal(err)
	}
	if err := ks.Add("admin-key-0123456789abc", ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name            string
		secret          string
		wantErr         bool
		sessions, admin bool
	}{
		{"sessions key", "sessions-key-0123456789", false, true, false},
		{"admin key implies sessions", "admin-key-0123456789abc", false, true, true},
		{"unknown key", "sessions-key-0123456780", true, false, false},
		{"prefix of a key", "sessions-key", true, false, false},
		{"empty", "", true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ks.Authenticate(tt.secret)
			if tt.wantErr {
				if !errors.Is(err, ErrUnauthorized) {
					t.Fatalf("err = %v, want ErrUnauthorized", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Has(ScopeSessions) != tt.sessions || p.Has(ScopeAdmin) != tt.admin {
				t.Errorf("scopes %v: sessions=%v admin=%v", p.Scopes, p.Has(ScopeSessions), p.Has(ScopeAdmin))
			}
			if p.Owner != Fingerprint(tt.secret) || p.Owner == tt.secret {
				t.Errorf("owner %q is not the key's fingerprint", p.Owner)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr bool
		n       int
	}{
		{"two keys", "keys:\n- key: aaaaaaaaaaaaaaaaaaaa\n  scopes: [sessions]\n- key: bbbbbbbbbbbbbbbbbbbb\n  scopes: [sessions, admin]\n", false, 2},
		{"unknown field", "keys:\n- key: aaaaaaaaaaaaaaaaaaaa\n  scopes: [sessions]\n  color: red\n", true, 0},
		{"unknown scope", "keys:\n- key: aaaaaaaaaaaaaaaaaaaa\n  scopes: [root]\n", true, 0},
		{"short key", "keys:\n- key: short\n  scopes: [admin]\n", true, 0},
		{"no scopes", "keys:\n- key: aaaaaaaaaaaaaaaaaaaa\n", true, 0},
		{"no keys", "keys: []\n", true, 0},
		{"not yaml", "{{{", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks, err := Parse([]byte(tt.yaml))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && ks.Len() != tt.n {
				t.Errorf("got %d keys, want %d", ks.Len(), tt.n)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header string
		want   string
		ok     bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"Basic abc", "", false},
		{"Bearer ", "", false},
		{"Bearer", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := BearerToken(tt.header)
		if got != tt.want || ok != tt.ok {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

// The deployment example must stay a valid keys file.
func TestExampleKeysFile(t *testing.T) {
	ks, err := LoadFile("../../../deploy/api-keys.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if ks.Len() != 2 {
		t.Fatalf("example has %d keys, want 2", ks.Len())
	}
}
