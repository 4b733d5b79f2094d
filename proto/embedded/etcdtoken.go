package embedded

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The embedded etcd signs its authentication tokens (JWT, HMAC-SHA256 with
// a key every member shares) instead of etcd's default "simple" tokens.
// A simple token is known only to the members that have applied the login
// that made it: after a leader's loss a lagging member refuses the fresh
// token of every watch the client re-opens ("invalid auth token"), and the
// control plane's caches went blind for seconds, answering creates
// no_capacity on a half-empty fleet. A signed token is checked by any
// member at once. etcd's own documentation keeps simple tokens for
// development.

// authTokenFile is the shared signing key, in the cluster's directory.
const authTokenFile = "auth-token.key"

// authTokenTTL is how long a token lives; clients log in again after.
const authTokenTTL = "10m"

// authTokenKey returns the path etcd reads the cluster's token signing
// key from, making the key under dir on the first start (a restart keeps
// it, so tokens clients hold stay valid). etcd's --auth-token is a list of
// key=value pairs split at commas, without escapes: when the key's path
// holds ',' or '=', etcd is given a copy in a fresh temporary folder, and
// done removes it (etcd reads the key once, when each member starts).
func authTokenKey(dir string) (path string, done func(), err error) {
	keep := filepath.Join(dir, authTokenFile)
	// The key is the file's bytes, read by every member alike.
	if _, err := LoadOrCreateSecret(keep); err != nil {
		return "", nil, fmt.Errorf("etcd token signing key: %w", err)
	}
	if !strings.ContainsAny(keep, ",=") {
		return keep, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "avatarfleet-etcd-token-")
	if err != nil {
		return "", nil, fmt.Errorf("etcd token signing key: %w", err)
	}
	done = func() { _ = os.RemoveAll(tmp) }
	copyPath := filepath.Join(tmp, authTokenFile)
	if strings.ContainsAny(copyPath, ",=") {
		done()
		return "", nil, fmt.Errorf("etcd token signing key: neither %s nor %s is free of ',' and '=', which etcd cannot read", keep, copyPath)
	}
	key, err := os.ReadFile(keep)
	if err == nil {
		err = os.WriteFile(copyPath, key, 0o600)
	}
	if err != nil {
		done()
		return "", nil, fmt.Errorf("etcd token signing key: %w", err)
	}
	return copyPath, done, nil
}

// authTokenConfig is etcd's --auth-token value for the key at path.
func authTokenConfig(path string) string {
	return "jwt,priv-key=" + path + ",sign-method=HS256,ttl=" + authTokenTTL
}
