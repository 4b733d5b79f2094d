// Package viewertoken issues and checks the short-lived tokens that let a
// browser watch one session (WHEP) or speak to it (WHIP) without an API key.
// A token is an HS256 JWT whose subject is the session id and whose
// "grants" claim says what it allows: subscribe (WHEP) and publish (WHIP)
// are separate. Its "kid" header names the key that signed it; the keys
// come from a file shared by every control-plane replica (KeySet), so each
// replica accepts every replica's tokens, and a key is retired by removing
// it from the file.
package viewertoken

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const issuer = "avatarfleet"

// Grant is one thing a token allows.
type Grant string

// Grants.
const (
	// Subscribe lets the bearer watch the session (WHEP).
	Subscribe Grant = "subscribe"
	// Publish lets the bearer speak to the session (WHIP).
	Publish Grant = "publish"
)

// AllGrants lists the grants in their canonical order.
var AllGrants = []Grant{Subscribe, Publish}

// ErrInvalid is returned for a token that is malformed, expired, forged or
// for another session. ErrExpired, ErrUnknownKey, ErrWrongSession and
// ErrMissingGrant refine it: all match errors.Is(err, ErrInvalid).
var ErrInvalid = errors.New("invalid viewer token")

var (
	// ErrExpired: a genuine token past its expiry.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalid)
	// ErrUnknownKey: the token names no key of the set (forged, or its
	// key was removed).
	ErrUnknownKey = fmt.Errorf("%w: signed with an unknown or retired key", ErrInvalid)
	// ErrWrongSession: a genuine, unexpired token of another session.
	ErrWrongSession = fmt.Errorf("%w: bound to another session", ErrInvalid)
	// ErrMissingGrant: a genuine, unexpired token of this session that
	// does not allow what was asked (a subscribe-only token on WHIP).
	ErrMissingGrant = fmt.Errorf("%w: lacks the grant", ErrInvalid)
)

// claims are a token's payload.
type claims struct {
	jwt.RegisteredClaims
	Grants []Grant `json:"grants"`
}

// Signer issues and verifies viewer tokens.
type Signer struct {
	keys *KeySet
	ttl  time.Duration
	now  func() time.Time
}

// Option configures a Signer.
type Option func(*Signer)

// WithClock makes the signer read the time from now (tests).
func WithClock(now func() time.Time) Option {
	return func(s *Signer) { s.now = now }
}

// NewSigner returns a signer that signs with keys' first key and accepts
// tokens of any of them; ttl is the lifetime of Issue's tokens.
func NewSigner(keys *KeySet, ttl time.Duration, opts ...Option) (*Signer, error) {
	if keys == nil || len(keys.keys) == 0 {
		return nil, errors.New("viewer token signer: no keys")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("viewer token ttl %s: must be positive", ttl)
	}
	s := &Signer{keys: keys, ttl: ttl, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// TTL is how long a token of Issue is valid.
func (s *Signer) TTL() time.Duration { return s.ttl }

// Issue returns a subscribe-only token for one session, valid for the
// signer's TTL: the viewer token of the Session resource.
func (s *Signer) Issue(sessionID string) (string, error) {
	tok, _, err := s.IssueGrants(sessionID, []Grant{Subscribe}, s.ttl)
	return tok, err
}

// IssueGrants returns a token for one session with the given grants (at
// least one, each known), valid for ttl, and its expiry.
func (s *Signer) IssueGrants(sessionID string, grants []Grant, ttl time.Duration) (string, time.Time, error) {
	if len(grants) == 0 {
		return "", time.Time{}, fmt.Errorf("sign viewer token for %s: no grants", sessionID)
	}
	for _, g := range grants {
		if !slices.Contains(AllGrants, g) {
			return "", time.Time{}, fmt.Errorf("sign viewer token for %s: unknown grant %q", sessionID, g)
		}
	}
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("sign viewer token for %s: ttl %s must be positive", sessionID, ttl)
	}
	now := s.now()
	exp := jwt.NewNumericDate(now.Add(ttl))
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   sessionID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: exp,
		},
		Grants: slices.Clone(grants),
	})
	k := s.keys.Signing()
	tok.Header["kid"] = k.ID
	signed, err := tok.SignedString(k.Secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign viewer token for %s: %w", sessionID, err)
	}
	return signed, exp.Time, nil
}

// Verify checks that token is genuine, valid now, bound to sessionID and
// carries the grant need. The error is ErrUnknownKey for a token whose kid
// the set lacks, ErrExpired for an expired one, ErrWrongSession for a good
// token of another session, ErrMissingGrant for one without need, and
// ErrInvalid for anything else.
func (s *Signer) Verify(token, sessionID string, need Grant) error {
	return s.verify(token, sessionID, need, 0)
}

// VerifyWithGrace is Verify that also accepts a token expired for at most
// grace. Hanging up (DELETE of a WHEP viewer) uses it: a viewer that has
// watched for longer than the TTL must still be able to leave.
func (s *Signer) VerifyWithGrace(token, sessionID string, need Grant, grace time.Duration) error {
	return s.verify(token, sessionID, need, grace)
}

// errNoKey marks a kid the key set lacks.
var errNoKey = errors.New("no such key")

func (s *Signer) verify(token, sessionID string, need Grant, grace time.Duration) error {
	if token == "" {
		return fmt.Errorf("%w: empty", ErrInvalid)
	}
	c := &claims{}
	// Claims are checked below, so that expiry, session binding and grants
	// are told apart (401 versus 403) and a grace can apply.
	_, err := jwt.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		secret, ok := s.keys.secret(kid)
		if !ok {
			return nil, errNoKey
		}
		return secret, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithoutClaimsValidation(),
	)
	if errors.Is(err, errNoKey) {
		return ErrUnknownKey
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if c.Issuer != issuer {
		return fmt.Errorf("%w: issuer %q", ErrInvalid, c.Issuer)
	}
	if c.ExpiresAt == nil {
		return fmt.Errorf("%w: no expiry", ErrInvalid)
	}
	if len(c.Grants) == 0 {
		return fmt.Errorf("%w: no grants", ErrInvalid)
	}
	now := s.now()
	if c.IssuedAt != nil && c.IssuedAt.After(now.Add(time.Minute)) {
		return fmt.Errorf("%w: issued in the future", ErrInvalid)
	}
	if !now.Before(c.ExpiresAt.Add(grace)) {
		return fmt.Errorf("%w (at %s)", ErrExpired, c.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if c.Subject != sessionID {
		return ErrWrongSession
	}
	if !slices.Contains(c.Grants, need) {
		return fmt.Errorf("%w %q", ErrMissingGrant, need)
	}
	return nil
}
