package viewertoken

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"sigs.k8s.io/yaml"
)

// Limits of a keys file.
const (
	// MaxKeysFileSize bounds the file read.
	MaxKeysFileSize = 64 << 10
	// MaxKeys bounds how many keys one file lists.
	MaxKeys = 32
	// MinSecretLen is the shortest accepted secret (HS256 wants 256 bits).
	MinSecretLen = 32
	// MaxSecretLen is the longest accepted secret.
	MaxSecretLen = 512
)

var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Key is one signing key: an id, carried in each token's "kid" header,
// and its secret.
type Key struct {
	ID     string
	Secret []byte
}

// KeySet is the ordered list of keys a Signer uses: the first signs new
// tokens, every one verifies. The order is the file's: "newest" means
// first listed.
type KeySet struct {
	keys []Key
}

// keysFile is the on-disk form (YAML or JSON).
type keysFile struct {
	Keys []keyEntry `json:"keys"`
}

type keyEntry struct {
	ID string `json:"id"`
	// Secret is the key's bytes in standard base64 (with padding).
	Secret string `json:"secret"`
}

// NewKeySet checks keys (at least one; ids unique and well-formed; secrets
// MinSecretLen..MaxSecretLen bytes and distinct) and returns the set. The
// first key signs.
func NewKeySet(keys ...Key) (*KeySet, error) {
	if len(keys) == 0 {
		return nil, errors.New("no keys: list at least one")
	}
	if len(keys) > MaxKeys {
		return nil, fmt.Errorf("%d keys: at most %d", len(keys), MaxKeys)
	}
	seen := make(map[string]int, len(keys))
	out := make([]Key, 0, len(keys))
	for i, k := range keys {
		if !keyIDPattern.MatchString(k.ID) {
			return nil, fmt.Errorf("key %d: id %q must match %s", i+1, k.ID, keyIDPattern)
		}
		if j, dup := seen[k.ID]; dup {
			return nil, fmt.Errorf("key %d: id %q is also key %d's: ids must be unique", i+1, k.ID, j+1)
		}
		seen[k.ID] = i
		if n := len(k.Secret); n < MinSecretLen || n > MaxSecretLen {
			return nil, fmt.Errorf("key %d (%s): secret is %d bytes, want %d..%d", i+1, k.ID, n, MinSecretLen, MaxSecretLen)
		}
		for j, prev := range out {
			if subtle.ConstantTimeCompare(prev.Secret, k.Secret) == 1 {
				return nil, fmt.Errorf("key %d (%s): same secret as key %d (%s)", i+1, k.ID, j+1, prev.ID)
			}
		}
		out = append(out, Key{ID: k.ID, Secret: bytes.Clone(k.Secret)})
	}
	return &KeySet{keys: out}, nil
}

// Signing is the key that signs new tokens (the first listed).
func (s *KeySet) Signing() Key { return s.keys[0] }

// IDs lists the key ids in order, the signing key first.
func (s *KeySet) IDs() []string {
	ids := make([]string, len(s.keys))
	for i, k := range s.keys {
		ids[i] = k.ID
	}
	return ids
}

// secret returns the secret of key id.
func (s *KeySet) secret(id string) ([]byte, bool) {
	for _, k := range s.keys {
		if k.ID == id {
			return k.Secret, true
		}
	}
	return nil, false
}

// ParseKeys reads a keys file's content: YAML (or JSON)
//
//	keys:
//	  - id: k2026-12
//	    secret: <standard base64 of 32..512 random bytes>
//
// Unknown fields, bad base64 and anything NewKeySet refuses are errors.
func ParseKeys(b []byte) (*KeySet, error) {
	if len(b) > MaxKeysFileSize {
		return nil, fmt.Errorf("%d bytes: at most %d", len(b), MaxKeysFileSize)
	}
	var f keysFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(f.Keys) > MaxKeys {
		return nil, fmt.Errorf("%d keys: at most %d", len(f.Keys), MaxKeys)
	}
	keys := make([]Key, len(f.Keys))
	for i, e := range f.Keys {
		secret, err := base64.StdEncoding.Strict().DecodeString(e.Secret)
		if err != nil {
			return nil, fmt.Errorf("key %d (%s): secret is not standard base64: %w", i+1, e.ID, err)
		}
		keys[i] = Key{ID: e.ID, Secret: secret}
	}
	return NewKeySet(keys...)
}

// MarshalKeys writes keys in the file format ParseKeys reads.
func MarshalKeys(keys ...Key) ([]byte, error) {
	f := keysFile{Keys: make([]keyEntry, len(keys))}
	for i, k := range keys {
		f.Keys[i] = keyEntry{ID: k.ID, Secret: base64.StdEncoding.EncodeToString(k.Secret)}
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("marshal token keys: %w", err)
	}
	header := "# Viewer-token signing keys: the first signs new tokens, every one listed verifies.\n"
	return append([]byte(header), b...), nil
}

// LoadKeysFile reads and checks a keys file (at most MaxKeysFileSize).
func LoadKeysFile(path string) (*KeySet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token keys: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxKeysFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("token keys %s: %w", path, err)
	}
	ks, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("token keys %s: %w", path, err)
	}
	return ks, nil
}

// GenerateKey makes a key of 32 random bytes whose id is "k" followed by
// the UTC date and 4 random hex digits, e.g. "k20261204-3fa9".
func GenerateKey(now time.Time) (Key, error) {
	b := make([]byte, 34)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("generate token key: %w", err)
	}
	return Key{ID: "k" + now.UTC().Format("20060102") + "-" + hex.EncodeToString(b[32:]), Secret: b[:32]}, nil
}

// LoadOrCreateKeysFile reads the keys file at path or, when there is none,
// creates it (mode 0600, its directory 0700) with one generated key. It
// reports whether it created the file. Two processes racing to create it
// agree on one file: the loser reads the winner's.
func LoadOrCreateKeysFile(path string) (*KeySet, bool, error) {
	ks, err := LoadKeysFile(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return ks, false, err
	}
	k, err := GenerateKey(time.Now())
	if err != nil {
		return nil, false, err
	}
	b, err := MarshalKeys(k)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("token keys: %w", err)
	}
	// Written under a temporary name and linked into place, so a reader
	// never sees a half-written file and an existing one is kept.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-keys-*")
	if err != nil {
		return nil, false, fmt.Errorf("token keys: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return nil, false, fmt.Errorf("token keys %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return nil, false, fmt.Errorf("token keys %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("token keys %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			ks, err := LoadKeysFile(path)
			return ks, false, err
		}
		return nil, false, fmt.Errorf("token keys: %w", err)
	}
	ks, err = NewKeySet(k)
	return ks, true, err
}
