// Package viewertoken issues and checks the short-lived tokens that let a
// browser watch one session (WHEP) without an API key. A token is an HS256
// JWT whose subject is the session id; the signing key is fleet-wide and kept
// in etcd, so every control-plane replica accepts every replica's tokens.
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
// for another session.
var ErrInvalid = errors.New("invalid viewer token")

// Signer issues and verifies viewer tokens.
type Signer struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// NewSigner returns a signer with a key of at least 32 bytes.
func NewSigner(key []byte, ttl time.Duration) (*Signer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("viewer token key: %d bytes, need at least 32", len(key))
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("viewer token ttl %s: must be positive", ttl)
	}
	return &Signer{key: key, ttl: ttl, now: time.Now}, nil
}

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

// Verify checks that token is valid now and bound to sessionID.
func (s *Signer) Verify(token, sessionID string) error {
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithSubject(sessionID),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
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
