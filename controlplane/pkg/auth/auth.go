// Package auth checks API keys. Keys are held only as SHA-256 digests, a
// presented key is compared against every digest in constant time, and no
// key is ever logged: a principal carries a non-secret fingerprint instead.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// Scopes.
const (
	ScopeSessions = "sessions"
	ScopeAdmin    = "admin"
)

// MinKeyLength is the shortest key accepted, so keys cannot be guessed.
const MinKeyLength = 16

// Principal is the holder of a valid key.
type Principal struct {
	// Owner is a stable, non-secret fingerprint of the key.
	Owner  string
	Scopes []string
	// Limits are the key's own limits over the defaults (limits.go).
	Limits Limits
}

// Has reports whether the principal holds a scope. Admin implies sessions.
func (p Principal) Has(scope string) bool {
	return slices.Contains(p.Scopes, scope) || (scope == ScopeSessions && slices.Contains(p.Scopes, ScopeAdmin))
}

type key struct {
	digest [sha256.Size]byte
	p      Principal
	// limits are what the keys file set for this key; the rest are the
	// set's defaults.
	limits LimitOverrides
	// webhooks are the key's endpoints (webhooks.go).
	webhooks []Webhook
}

// Keys is a set of API keys.
type Keys struct {
	keys     []key
	defaults Limits
}

// ErrUnauthorized is returned for a missing or unknown key.
var ErrUnauthorized = errors.New("missing or invalid API key")

// Fingerprint is the owner id of a key: a short prefix of its digest.
func Fingerprint(secret string) string {
	d := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(d[:8])
}

// Add adds a key with scopes and the set's default limits.
func (k *Keys) Add(secret string, scopes ...string) error {
	return k.AddWithLimits(secret, LimitOverrides{}, scopes...)
}

// AddWithLimits adds a key with scopes and its own limits where set.
func (k *Keys) AddWithLimits(secret string, limits LimitOverrides, scopes ...string) error {
	if err := limits.validate(); err != nil {
		return err
	}
	if len(secret) < MinKeyLength {
		return fmt.Errorf("API key too short: need at least %d characters", MinKeyLength)
	}
	for _, s := range scopes {
		if s != ScopeSessions && s != ScopeAdmin {
			return fmt.Errorf("unknown scope %q (want %q or %q)", s, ScopeSessions, ScopeAdmin)
		}
	}
	if len(scopes) == 0 {
		return errors.New("API key without scopes")
	}
	k.keys = append(k.keys, key{
		digest: sha256.Sum256([]byte(secret)),
		p:      Principal{Owner: Fingerprint(secret), Scopes: slices.Clone(scopes)},
		limits: limits,
	})
	return nil
}

// Len is the number of keys.
func (k *Keys) Len() int { return len(k.keys) }

// Authenticate finds the principal of a presented key. Every stored digest
// is compared, whatever matches, so timing says nothing about which key or
// how much of it matched.
func (k *Keys) Authenticate(secret string) (Principal, error) {
	if secret == "" {
		return Principal{}, ErrUnauthorized
	}
	d := sha256.Sum256([]byte(secret))
	found := -1
	for i := range k.keys {
		if subtle.ConstantTimeCompare(d[:], k.keys[i].digest[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, ErrUnauthorized
	}
	p := k.keys[found].p
	p.Limits = k.keys[found].limits.over(k.defaults)
	return p, nil
}

// BearerToken extracts the token of an "Authorization: Bearer" header.
func BearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

type fileFormat struct {
	Keys []struct {
		Key      string         `json:"key"`
		Scopes   []string       `json:"scopes"`
		Limits   LimitOverrides `json:"limits"`
		Webhooks []webhookEntry `json:"webhooks"`
	} `json:"keys"`
}

// maxKeysFile bounds the keys file, which is read whole.
const maxKeysFile = 1 << 20

// LoadFile reads a YAML keys file: keys: [{key: "…", scopes: [sessions,
// admin], limits: {max_sessions: 10, …}, webhooks: [{url: "…", secret:
// "whsec_…"}]}]; limits (limits.go) and webhooks (webhooks.go) are
// optional. A relative secret_file is read from the keys file's directory.
func LoadFile(path string) (*Keys, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("API keys file: %w", err)
	}
	if info.Size() > maxKeysFile {
		return nil, fmt.Errorf("API keys file %s: larger than %d bytes", path, maxKeysFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("API keys file: %w", err)
	}
	return parse(b, filepath.Dir(path))
}

// Parse parses the YAML keys file format; unknown fields are errors. A
// relative secret_file is read from the working directory.
func Parse(b []byte) (*Keys, error) { return parse(b, "") }

func parse(b []byte, dir string) (*Keys, error) {
	var f fileFormat
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parse API keys: %w", err)
	}
	if len(f.Keys) == 0 {
		return nil, errors.New("parse API keys: no keys")
	}
	ks := &Keys{}
	for i, e := range f.Keys {
		if err := ks.AddWithLimits(e.Key, e.Limits, e.Scopes...); err != nil {
			return nil, fmt.Errorf("parse API keys: entry %d: %w", i, err)
		}
		hooks, err := parseWebhooks(e.Webhooks, dir)
		if err != nil {
			return nil, fmt.Errorf("parse API keys: entry %d: %w", i, err)
		}
		ks.keys[len(ks.keys)-1].webhooks = hooks
	}
	return ks, nil
}

// Generate makes a new random key.
func Generate() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "afk_" + hex.EncodeToString(b[:])
}
