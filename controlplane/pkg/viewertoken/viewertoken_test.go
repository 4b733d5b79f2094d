package viewertoken

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func mustKeys(t *testing.T, keys ...Key) *KeySet {
	t.Helper()
	ks, err := NewKeySet(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func key(id string, fill byte) Key {
	return Key{ID: id, Secret: []byte(strings.Repeat(string(fill), 32))}
}

func TestVerify(t *testing.T) {
	k := key("k1", 'k')
	clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	s, err := NewSigner(mustKeys(t, k), time.Minute, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	tokA, err := s.Issue("sess_a")
	if err != nil {
		t.Fatal(err)
	}
	pubA, _, err := s.IssueGrants("sess_a", []Grant{Publish}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	bothA, _, err := s.IssueGrants("sess_a", []Grant{Subscribe, Publish}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Another key under the same id: a forgery that names a known kid.
	other, _ := NewSigner(mustKeys(t, key("k1", 'x')), time.Minute, WithClock(clk.now))
	forged, _ := other.Issue("sess_a")
	// Another key under an id the set lacks (forged, or a removed key).
	unknown, _ := NewSigner(mustKeys(t, key("k0", 'k')), time.Minute, WithClock(clk.now))
	unknownKid, _ := unknown.Issue("sess_a")
	sign := func(method jwt.SigningMethod, secret any, kid string, c claims) string {
		t.Helper()
		tok := jwt.NewWithClaims(method, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		signed, err := tok.SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	exp := jwt.NewNumericDate(clk.t.Add(time.Minute))
	good := func(rc jwt.RegisteredClaims) claims { return claims{RegisteredClaims: rc, Grants: []Grant{Subscribe}} }
	otherIssuer := sign(jwt.SigningMethodHS256, k.Secret, "k1", good(jwt.RegisteredClaims{Issuer: "someone", Subject: "sess_a", ExpiresAt: exp}))
	noExpiry := sign(jwt.SigningMethodHS256, k.Secret, "k1", good(jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a"}))
	noKid := sign(jwt.SigningMethodHS256, k.Secret, "", good(jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", ExpiresAt: exp}))
	noGrants := sign(jwt.SigningMethodHS256, k.Secret, "k1", claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", ExpiresAt: exp}})
	hs512 := sign(jwt.SigningMethodHS512, k.Secret, "k1", good(jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", ExpiresAt: exp}))
	unsigned := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "k1", good(jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", ExpiresAt: exp}))
	future := sign(jwt.SigningMethodHS256, k.Secret, "k1", good(jwt.RegisteredClaims{Issuer: issuer, Subject: "sess_a", IssuedAt: jwt.NewNumericDate(clk.t.Add(time.Hour)), ExpiresAt: jwt.NewNumericDate(clk.t.Add(2 * time.Hour))}))

	tests := []struct {
		name, token, session string
		need                 Grant         // "" means Subscribe
		after, grace         time.Duration // clock advance before Verify; grace for VerifyWithGrace
		want                 error         // nil: valid
	}{
		{name: "right session", token: tokA, session: "sess_a"},
		{name: "right session just before expiry", token: tokA, session: "sess_a", after: 59 * time.Second},
		{name: "other session", token: tokA, session: "sess_b", want: ErrWrongSession},
		{name: "subscribe token cannot publish", token: tokA, session: "sess_a", need: Publish, want: ErrMissingGrant},
		{name: "publish token cannot subscribe", token: pubA, session: "sess_a", want: ErrMissingGrant},
		{name: "publish token publishes", token: pubA, session: "sess_a", need: Publish},
		{name: "both grants subscribe", token: bothA, session: "sess_a"},
		{name: "both grants publish", token: bothA, session: "sess_a", need: Publish},
		{name: "other session before grant", token: tokA, session: "sess_b", need: Publish, want: ErrWrongSession},
		{name: "other key, same kid", token: forged, session: "sess_a", want: ErrInvalid},
		{name: "unknown kid", token: unknownKid, session: "sess_a", want: ErrUnknownKey},
		{name: "no kid", token: noKid, session: "sess_a", want: ErrUnknownKey},
		{name: "no grants", token: noGrants, session: "sess_a", want: ErrInvalid},
		{name: "expired", token: tokA, session: "sess_a", after: time.Minute, want: ErrExpired},
		{name: "expired, other session", token: tokA, session: "sess_b", after: 2 * time.Minute, want: ErrExpired},
		{name: "expired within grace", token: tokA, session: "sess_a", after: 2 * time.Minute, grace: time.Hour},
		{name: "grace keeps session binding", token: tokA, session: "sess_b", after: 2 * time.Minute, grace: time.Hour, want: ErrWrongSession},
		{name: "grace keeps grants", token: tokA, session: "sess_a", need: Publish, after: 2 * time.Minute, grace: time.Hour, want: ErrMissingGrant},
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
	refined := []error{ErrExpired, ErrWrongSession, ErrMissingGrant, ErrUnknownKey}
	start := clk.t
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.t = start.Add(tt.after)
			need := tt.need
			if need == "" {
				need = Subscribe
			}
			var err error
			if tt.grace > 0 {
				err = s.VerifyWithGrace(tt.token, tt.session, need, tt.grace)
			} else {
				err = s.Verify(tt.token, tt.session, need)
			}
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Verify: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			case tt.want != nil && !errors.Is(err, ErrInvalid):
				t.Fatalf("Verify = %v, does not match ErrInvalid", err)
			}
			if tt.want == ErrInvalid {
				for _, r := range refined {
					if errors.Is(err, r) {
						t.Fatalf("Verify = %v, want plain ErrInvalid", err)
					}
				}
			}
		})
	}
}

// TestRotation walks the documented rotation: a new key is first added
// after the signing one (accepted, not signing), then moved first
// (signing), then the old key is removed: its tokens stop working.
func TestRotation(t *testing.T) {
	oldK, newK := key("old", 'o'), key("new", 'n')
	signer := func(keys ...Key) *Signer {
		s, err := NewSigner(mustKeys(t, keys...), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before, phase1, phase2, after := signer(oldK), signer(oldK, newK), signer(newK, oldK), signer(newK)
	oldTok, _ := before.Issue("s")
	newTok, _ := phase2.Issue("s")
	kid := func(tok string) string {
		h, _, err := jwt.NewParser().ParseUnverified(tok, &claims{})
		if err != nil {
			t.Fatal(err)
		}
		return h.Header["kid"].(string)
	}
	if kid(oldTok) != "old" || kid(newTok) != "new" {
		t.Fatalf("kids %q %q", kid(oldTok), kid(newTok))
	}
	if tok, _ := phase1.Issue("s"); kid(tok) != "old" {
		t.Fatalf("phase 1 signs with %q, want the first listed (old)", kid(tok))
	}
	for _, s := range []*Signer{before, phase1, phase2} {
		if err := s.Verify(oldTok, "s", Subscribe); err != nil {
			t.Fatalf("old token during rotation: %v", err)
		}
	}
	for _, s := range []*Signer{phase1, phase2, after} {
		if err := s.Verify(newTok, "s", Subscribe); err != nil {
			t.Fatalf("new token: %v", err)
		}
	}
	if err := after.Verify(oldTok, "s", Subscribe); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("token of a removed key: %v, want ErrUnknownKey", err)
	}
	if err := before.Verify(newTok, "s", Subscribe); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("token of a key not yet known: %v, want ErrUnknownKey", err)
	}
}

func TestIssueIsShortLived(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	s, err := NewSigner(mustKeys(t, key("k", 'k')), time.Hour, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Issue("sess_a")
	if err != nil {
		t.Fatal(err)
	}
	c := &claims{}
	if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
		t.Fatal(err)
	}
	if got := c.ExpiresAt.Sub(c.IssuedAt.Time); got != time.Hour {
		t.Fatalf("token lives %s, want the TTL (1h)", got)
	}
	if c.Subject != "sess_a" || c.Issuer != issuer || !slices.Equal(c.Grants, []Grant{Subscribe}) {
		t.Fatalf("claims %+v", c)
	}
	// A token issued later (a fresh GET of the session) outlives the first.
	clk.t = clk.t.Add(59 * time.Minute)
	fresh, _ := s.Issue("sess_a")
	clk.t = clk.t.Add(2 * time.Minute)
	if err := s.Verify(tok, "sess_a", Subscribe); !errors.Is(err, ErrExpired) {
		t.Fatalf("old token: %v, want ErrExpired", err)
	}
	if err := s.Verify(fresh, "sess_a", Subscribe); err != nil {
		t.Fatalf("re-issued token: %v", err)
	}
}

func TestIssueGrants(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	s, err := NewSigner(mustKeys(t, key("k", 'k')), time.Hour, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := s.IssueGrants("s", []Grant{Publish}, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(clk.t.Add(90 * time.Second)) {
		t.Fatalf("expiry %s", exp)
	}
	clk.t = clk.t.Add(89 * time.Second)
	if err := s.Verify(tok, "s", Publish); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(time.Second)
	if err := s.Verify(tok, "s", Publish); !errors.Is(err, ErrExpired) {
		t.Fatalf("after its ttl: %v", err)
	}
	for _, bad := range []struct {
		grants []Grant
		ttl    time.Duration
	}{{nil, time.Minute}, {[]Grant{"admin"}, time.Minute}, {[]Grant{Subscribe}, 0}} {
		if _, _, err := s.IssueGrants("s", bad.grants, bad.ttl); err == nil {
			t.Fatalf("IssueGrants(%v, %s) succeeded", bad.grants, bad.ttl)
		}
	}
}

func TestNewSigner(t *testing.T) {
	tests := []struct {
		name string
		keys *KeySet
		ttl  time.Duration
		ok   bool
	}{
		{"no keys", nil, time.Minute, false},
		{"empty set", &KeySet{}, time.Minute, false},
		{"zero ttl", mustKeys(t, key("k", 'k')), 0, false},
		{"negative ttl", mustKeys(t, key("k", 'k')), -time.Second, false},
		{"good", mustKeys(t, key("k", 'k')), time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSigner(tt.keys, tt.ttl)
			if (err == nil) != tt.ok {
				t.Fatalf("NewSigner: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
