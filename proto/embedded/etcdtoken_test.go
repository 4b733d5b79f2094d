package embedded

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// enableAuth turns authentication on with a root user.
func enableAuth(t *testing.T, c *EtcdCluster) {
	t.Helper()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.UserAdd(ctx, "root", "pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
}

// login logs in as root through one member only and returns the token.
func login(t *testing.T, endpoint string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Authenticate(ctx, "root", "pw")
	if err != nil {
		t.Fatalf("log in through %s: %v", endpoint, err)
	}
	return resp.Token
}

// readWith reads a key through one member with a token it did not issue.
func readWith(endpoint, token string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Token: token, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.Get(ctx, "k", clientv3.WithSerializable())
	return err
}

// TestEtcdTokensAreSigned: the embedded etcd hands out HS256-signed
// tokens, not simple ones, and a token one member issued is good on every
// member (a member checks the signature; it need not have applied the
// login, which a member lagging after a leader's loss has not).
func TestEtcdTokensAreSigned(t *testing.T) {
	c, err := StartEtcd(context.Background(), EtcdOptions{Dir: t.TempDir(), Members: 3, NoFsync: true, BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enableAuth(t, c)
	token := login(t, c.Endpoints()[0])
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWT (a simple token is one opaque string)", token)
	}
	var header struct{ Alg string }
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(raw, &header); err != nil || header.Alg != "HS256" {
		t.Fatalf("token header %s: alg %q, %v; want HS256", raw, header.Alg, err)
	}
	for i, ep := range c.Endpoints() {
		if err := readWith(ep, token); err != nil {
			t.Errorf("member %d refuses a token member 0 issued: %v", i, err)
		}
	}
	if err := readWith(c.Endpoints()[1], token+"x"); err == nil {
		t.Error("a token with a broken signature was accepted")
	}
}

// TestEtcdTokenKeyOutlivesARestart: a restart on the same directory keeps
// the signing key, so the tokens clients hold stay good.
func TestEtcdTokenKeyOutlivesARestart(t *testing.T) {
	dir := t.TempDir()
	c, err := StartEtcd(context.Background(), EtcdOptions{Dir: dir, NoFsync: true, BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	enableAuth(t, c)
	token := login(t, c.Endpoints()[0])
	key, err := os.ReadFile(filepath.Join(dir, authTokenFile))
	addr := strings.TrimPrefix(c.Endpoints()[0], "http://")
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, authTokenFile)); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("signing key file mode %v, want 0600", fi.Mode().Perm())
	}

	c, err = StartEtcd(context.Background(), EtcdOptions{Dir: dir, NoFsync: true, BcryptCost: 4, ClientAddrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	again, err := os.ReadFile(filepath.Join(dir, authTokenFile))
	if err != nil || string(again) != string(key) {
		t.Fatalf("the signing key changed across a restart (%v)", err)
	}
	if err := readWith(c.Endpoints()[0], token); err != nil {
		t.Errorf("a token from before the restart is refused: %v", err)
	}
}

// TestEtcdTokensWithACommaInTheDirectory: etcd cannot read a key file
// whose path holds ',' (its option list has no escapes): it is given a
// copy, removed once the members have read it, and the kept key is the
// one in the data directory.
func TestEtcdTokensWithACommaInTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a,b=c")
	c, err := StartEtcd(context.Background(), EtcdOptions{Dir: dir, NoFsync: true, BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enableAuth(t, c)
	token := login(t, c.Endpoints()[0])
	if err := readWith(c.Endpoints()[0], token); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, authTokenFile)); err != nil {
		t.Errorf("the key is not kept in the data directory: %v", err)
	}
	path, done, err := authTokenKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := os.ReadFile(filepath.Join(dir, authTokenFile))
	copied, err := os.ReadFile(path)
	if err != nil || string(copied) != string(kept) || strings.ContainsAny(path, ",=") {
		t.Errorf("etcd's copy %s: %v, same key %v", path, err, string(copied) == string(kept))
	}
	done()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the copy for etcd is still there after done: %v", err)
	}
}
