// Package viewertoken issues and checks the short-lived tokens that let a
// browser watch one session (WHEP) or speak to it (WHIP) without an API key.
// A token is an HS256 JWT whose subject is the session id; the signing key is
// fleet-wide and kept in etcd, so every control-plane replica accepts every
// replica's tokens.
package viewertoken

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const issuer = "avatarfleet"

// ErrInvalid is returned for a token that is malformed, expired, forged or
// for another session. ErrExpired and ErrWrongSession refine it: both match
// errors.Is(err, ErrInvalid).
var ErrInvalid = errors.New("invalid viewer token")

var (
	// ErrExpired: a genuine token past its expiry.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalid)
	// ErrWrongSession: a genuine, unexpired token of another session.
	ErrWrongSession = fmt.Errorf("%w: bound to another session", ErrInvalid)
)

// Signer issues and verifies viewer tokens.
type Signer struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// Option configures a Signer.
type Option func(*Signer)

// WithClock makes the signer read the time from now (tests).
func WithClock(now func() time.Time) Option {
	return func(s *Signer) { s.now = now }
}

// NewSigner returns a signer with a key of at least 32 bytes.
func NewSigner(key []byte, ttl time.Duration, opts ...Option) (*Signer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("viewer token key: %d bytes, need at least 32", len(key))
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("viewer token ttl %s: must be positive", ttl)
	}
	s := &Signer{key: key, ttl: ttl, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// TTL is how long an issued token is valid.
func (s *Signer) TTL() time.Duration { return s.ttl }

// Issue returns a token for one session, valid for the signer's TTL.
func (s *Signer) Issue(sessionID string) (string, error) {
	now := s.now()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer:    issuer,
		Subject:   sessionID,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(s.ttl)),
	})
	signed, err := tok.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("sign viewer token for %s: %w", sessionID, err)
	}
	return signed, nil
}

// Verify checks that token is genuine, valid now and bound to sessionID.
// The error is ErrWrongSession for a good token of another session,
// ErrExpired for an expired one, and ErrInvalid for anything else.
func (s *Signer) Verify(token, sessionID string) error {
	return s.verify(token, sessionID, 0)
}

// VerifyWithGrace is Verify that also accepts a token expired for at most
// grace. Hanging up (DELETE of a WHEP viewer) uses it: a viewer that has
// watched for longer than the TTL must still be able to leave.
func (s *Signer) VerifyWithGrace(token, sessionID string, grace time.Duration) error {
	return s.verify(token, sessionID, grace)
}

func (s *Signer) verify(token, sessionID string, grace time.Duration) error {
	if token == "" {
		return fmt.Errorf("%w: empty", ErrInvalid)
	}
	claims := &jwt.RegisteredClaims{}
	// Claims are checked below, so that expiry and session binding are told
	// apart (401 versus 403) and a grace can apply.
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithoutClaimsValidation(),
	)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if claims.Issuer != issuer {
		return fmt.Errorf("%w: issuer %q", ErrInvalid, claims.Issuer)
	}
	if claims.ExpiresAt == nil {
		return fmt.Errorf("%w: no expiry", ErrInvalid)
	}
	now := s.now()
	if claims.IssuedAt != nil && claims.IssuedAt.After(now.Add(time.Minute)) {
		return fmt.Errorf("%w: issued in the future", ErrInvalid)
	}
	if !now.Before(claims.ExpiresAt.Add(grace)) {
		return fmt.Errorf("%w (at %s)", ErrExpired, claims.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if claims.Subject != sessionID {
		return ErrWrongSession
	}
	return nil
}

// LoadOrCreateKey returns the fleet's signing key from etcd, creating it
// (create-if-absent, so concurrent replicas agree on one) when missing.
func LoadOrCreateKey(ctx context.Context, cli *clientv3.Client, etcdKey string) ([]byte, error) {
	var fresh [32]byte
	if _, err := rand.Read(fresh[:]); err != nil {
		return nil, fmt.Errorf("viewer token key: %w", err)
	}
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(etcdKey), "=", 0)).
		Then(clientv3.OpPut(etcdKey, string(fresh[:]))).
		Else(clientv3.OpGet(etcdKey)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("load viewer token key: %w", err)
	}
	if resp.Succeeded {
		return fresh[:], nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return nil, errors.New("load viewer token key: vanished while read")
	}
	return kvs[0].Value, nil
}
