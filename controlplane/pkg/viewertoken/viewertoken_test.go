package viewertoken

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestVerify(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	s, err := NewSigner(key, time.Minute, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	tokA, err := s.Issue("sess_a")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSigner([]byte(strings.Repeat("x", 32)), time.Minute, WithClock(clk.now))
	forged, _ := other.Issue("sess_a")
	sign := func(method jwt.SigningMethod, k any, c jwt.RegisteredClaims) string {
		t.Helper()
		tok, err := jwt.NewWithClaims(method, c).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	exp := jwt.NewNumericDate(clk.t.Add(time.Minute))
	otherIssuer := sign(jwt.SigningMethodHS256, key, jwt.RegisteredClaims{Issuer: "someone", Subject: "sess_a", ExpiresAt: exp})
	noExpiry := sign(jwt.SigningMethodHS256, key, jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a"})
	hs512 := sign(jwt.SigningMethodHS512, key, jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", ExpiresAt: exp})
	unsigned := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", ExpiresAt: exp})
	future := sign(jwt.SigningMethodHS256, key, jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", IssuedAt: jwt.NewNumericDate(clk.t.Add(time.Hour)), ExpiresAt: jwt.NewNumericDate(clk.t.Add(2 * time.Hour))})

	tests := []struct {
		name, token, session string
		after, grace         time.Duration // clock advance before Verify; grace for VerifyWithGrace
		want                 error         // nil: valid
	}{
		{name: "right session", token: tokA, session: "sess_a"},
		{name: "right session just before expiry", token: tokA, session: "sess_a", after: 59 * time.Second},
		{name: "other session", token: tokA, session: "sess_b", want: ErrWrongSession},
		{name: "other key", token: forged, session: "sess_a", want: ErrInvalid},
		{name: "expired", token: tokA, session: "sess_a", after: time.Minute, want: ErrExpired},
		{name: "expired, other session", token: tokA, session: "sess_b", after: 2 * time.Minute, want: ErrExpired},
		{name: "expired within grace", token: tokA, session: "sess_a", after: 2 * time.Minute, grace: time.Hour},
		{name: "grace keeps session binding", token: tokA, session: "sess_b", after: 2 * time.Minute, grace: time.Hour, want: ErrWrongSession},
		{name: "expired past grace", token: tokA, session: "sess_a", after: 2 * time.Hour, grace: time.Hour, want: ErrExpired},
		{name: "missing", token: "", session: "sess_a", want: ErrInvalid},
		{name: "garbage", token: "a.b.c", session: "sess_a", want: ErrInvalid},
		{name: "not a JWT", token: "vt_hello", session: "sess_a", want: ErrInvalid},
		{name: "other issuer", token: otherIssuer, session: "sess_a", want: ErrInvalid},
		{name: "no expiry", token: noExpiry, session: "sess_a", want: ErrInvalid},
		{name: "HS512 with the key", token: hs512, session: "sess_a", want: ErrInvalid},
		{name: "alg none", token: unsigned, session: "sess_a", want: ErrInvalid},
		{name: "issued in the future", token: future, session: "sess_a", want: ErrInvalid},
	}
	start := clk.t
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.t = start.Add(tt.after)
			var err error
			if tt.grace > 0 {
				err = s.VerifyWithGrace(tt.token, tt.session, tt.grace)
			} else {
				err = s.Verify(tt.token, tt.session)
			}
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Verify: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			case tt.want != nil && !errors.Is(err, ErrInvalid):
				t.Fatalf("Verify = %v, does not match ErrInvalid", err)
			}
			if tt.want == ErrInvalid && (errors.Is(err, ErrExpired) || errors.Is(err, ErrWrongSession)) {
				t.Fatalf("Verify = %v, want plain ErrInvalid", err)
			}
		})
	}
}

func TestIssueIsShortLived(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	s, err := NewSigner([]byte(strings.Repeat("k", 32)), time.Hour, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Issue("sess_a")
	if err != nil {
		t.Fatal(err)
	}
	claims := &jwt.RegisteredClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, claims); err != nil {
		t.Fatal(err)
	}
	if got := claims.ExpiresAt.Sub(claims.IssuedAt.Time); got != time.Hour {
		t.Fatalf("token lives %s, want the TTL (1h)", got)
	}
	if claims.Subject != "sess_a" || claims.Issuer != issuer {
		t.Fatalf("claims %+v", claims)
	}
	// A token issued later (a fresh GET of the session) outlives the first.
	clk.t = clk.t.Add(59 * time.Minute)
	fresh, _ := s.Issue("sess_a")
	clk.t = clk.t.Add(2 * time.Minute)
	if err := s.Verify(tok, "sess_a"); !errors.Is(err, ErrExpired) {
		t.Fatalf("old token: %v, want ErrExpired", err)
	}
	if err := s.Verify(fresh, "sess_a"); err != nil {
		t.Fatalf("re-issued token: %v", err)
	}
}

func TestNewSigner(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
		ttl  time.Duration
		ok   bool
	}{
		{"short key", []byte("short"), time.Minute, false},
		{"zero ttl", []byte(strings.Repeat("k", 32)), 0, false},
		{"negative ttl", []byte(strings.Repeat("k", 32)), -time.Second, false},
		{"good", []byte(strings.Repeat("k", 32)), time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSigner(tt.key, tt.ttl)
			if (err == nil) != tt.ok {
				t.Fatalf("NewSigner: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
