package viewertoken

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	s, err := NewSigner(key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tokA, err := s.Issue("sess_a")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSigner([]byte(strings.Repeat("x", 32)), time.Minute)
	forged, _ := other.Issue("sess_a")
	expired, _ := NewSigner(key, time.Minute)
	expired.now = func() time.Time { return time.Now().Add(-2 * time.Minute) }
	old, _ := expired.Issue("sess_a")

	tests := []struct {
		name, token, session string
		ok                   bool
	}{
		{"right session", tokA, "sess_a", true},
		{"other session", tokA, "sess_b", false},
		{"other key", forged, "sess_a", false},
		{"expired", old, "sess_a", false},
		{"missing", "", "sess_a", false},
		{"garbage", "a.b.c", "sess_a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Verify(tt.token, tt.session)
			if tt.ok && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestNewSignerRejectsShortKey(t *testing.T) {
	if _, err := NewSigner([]byte("short"), time.Minute); err == nil {
		t.Fatal("short key accepted")
	}
}
