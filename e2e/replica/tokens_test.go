package replica_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/replica"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// TestTokensEndpoint: POST /v1/sessions/{id}/tokens gives the owner a
// token with exactly the grants asked, refuses another key's session as
// not found, and bad grants or ttl with 400.
func TestTokensEndpoint(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Replicas: 2, Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 3}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	verifier := tokenSigner(t, f, time.Now())
	path := "/v1/sessions/" + s.ID + "/tokens"

	// The Session's own token only subscribes.
	if err := verifier.Verify(s.ViewerToken, s.ID, viewertoken.Subscribe); err != nil {
		t.Fatalf("viewer token: %v", err)
	}
	if err := verifier.Verify(s.ViewerToken, s.ID, viewertoken.Publish); !errors.Is(err, viewertoken.ErrMissingGrant) {
		t.Fatalf("viewer token may publish: %v", err)
	}

	c, err := apiclient.New(apiclient.Options{BaseURL: f.URL(1), APIKey: testfleet.SessionsKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		grants     []string
		ttl        int
		wantGrants []viewertoken.Grant
		wantTTL    time.Duration
	}{
		{[]string{"publish"}, 0, []viewertoken.Grant{viewertoken.Publish}, time.Hour},
		{[]string{"subscribe"}, 120, []viewertoken.Grant{viewertoken.Subscribe}, 2 * time.Minute},
		{[]string{"publish", "subscribe"}, 86400, []viewertoken.Grant{viewertoken.Subscribe, viewertoken.Publish}, 24 * time.Hour},
	} {
		before := time.Now()
		tok, err := c.CreateToken(context.Background(), s.ID, tt.grants, tt.ttl)
		if err != nil {
			t.Fatalf("grants %v: %v", tt.grants, err)
		}
		var got []string
		for _, g := range tt.wantGrants {
			got = append(got, string(g))
		}
		if !slices.Equal(tok.Grants, got) {
			t.Fatalf("grants %v, want %v", tok.Grants, got)
		}
		if exp := before.Add(tt.wantTTL); tok.ExpiresAt.Before(exp.Add(-2*time.Second)) || tok.ExpiresAt.After(exp.Add(5*time.Second)) {
			t.Fatalf("expires_at %s, want about %s", tok.ExpiresAt, exp)
		}
		for _, g := range viewertoken.AllGrants {
			err := verifier.Verify(tok.Token, s.ID, g)
			if want := slices.Contains(tt.wantGrants, g); (err == nil) != want {
				t.Fatalf("token of %v verified for %s: %v", tt.grants, g, err)
			}
		}
	}

	publish := apiv1.CreateTokenRequest{Grants: []string{"publish"}}
	ended := createSession(t, f, 0, testfleet.SessionsKey)
	if r := f.MustDo(0, "DELETE", "/v1/sessions/"+ended.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete: %d", r.Status)
	}
	n := func(v int) *int { return &v }
	tests := []struct {
		name, key, path string
		body            any
		status          int
		code            string
	}{
		{"another key's session", testfleet.OtherKey, path, publish, 404, apiv1.CodeNotFound},
		{"admin key, not the owner", testfleet.AdminKey, path, publish, 404, apiv1.CodeNotFound},
		{"no key", "", path, publish, 401, apiv1.CodeUnauthorized},
		{"viewer token instead of a key", s.ViewerToken, path, publish, 401, apiv1.CodeUnauthorized},
		{"unknown session", testfleet.SessionsKey, "/v1/sessions/sess_nope/tokens", publish, 404, apiv1.CodeNotFound},
		{"ended session", testfleet.SessionsKey, "/v1/sessions/" + ended.ID + "/tokens", publish, 404, apiv1.CodeNotFound},
		{"no grants", testfleet.SessionsKey, path, apiv1.CreateTokenRequest{}, 400, apiv1.CodeInvalidRequest},
		{"unknown grant", testfleet.SessionsKey, path, apiv1.CreateTokenRequest{Grants: []string{"admin"}}, 400, apiv1.CodeInvalidRequest},
		{"grants not a list", testfleet.SessionsKey, path, map[string]any{"grants": "publish"}, 400, apiv1.CodeInvalidRequest},
		{"ttl too short", testfleet.SessionsKey, path, apiv1.CreateTokenRequest{Grants: []string{"publish"}, TTLSeconds: n(59)}, 400, apiv1.CodeInvalidRequest},
		{"ttl too long", testfleet.SessionsKey, path, apiv1.CreateTokenRequest{Grants: []string{"publish"}, TTLSeconds: n(86401)}, 400, apiv1.CodeInvalidRequest},
		{"unknown field", testfleet.SessionsKey, path, map[string]any{"grants": []string{"publish"}, "session": "x"}, 400, apiv1.CodeInvalidRequest},
		{"no body", testfleet.SessionsKey, path, nil, 415, apiv1.CodeUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.MustDo(0, "POST", tt.path, tt.key, tt.body)
			if r.Status != tt.status || errorCode(t, r) != tt.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tt.status, tt.code)
			}
		})
	}
}

// startReplica starts one more replica of f's fleet with opts (listen,
// etcd, NATS, fleet TLS and API keys filled in) and stops it when the test ends.
func startReplica(t *testing.T, f *testfleet.Fleet, opts replica.Options) *replica.Replica {
	t.Helper()
	keys := &auth.Keys{}
	if err := keys.Add(testfleet.SessionsKey, auth.ScopeSessions); err != nil {
		t.Fatal(err)
	}
	opts.ReplicaID = "extra-" + t.Name()
	opts.Listen, opts.Etcd, opts.NATS, opts.Keys = "127.0.0.1:0", f.ControlPlaneEtcd(), f.ControlPlaneNATS(), keys
	if opts.FleetTLS == nil {
		opts.FleetTLS = f.ControlPlaneTLS()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := replica.New(ctx, opts)
	if err != nil {
		cancel()
		t.Fatalf("start replica: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica: %v", err)
		}
	})
	return r
}

// TestTokenKeyRotation follows the documented rotation through replicas
// that list different keys: a new key is added after the old (accepted,
// not signing), then put first (signing), then the old one is removed:
// tokens signed with it are refused 401, and replicas still on the old
// list refuse tokens of the new key.
func TestTokenKeyRotation(t *testing.T) {
	oldK, err := viewertoken.GenerateKey(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newK := viewertoken.Key{ID: "new", Secret: []byte(strings.Repeat("n", 32))}
	set := func(keys ...viewertoken.Key) *viewertoken.KeySet {
		ks, err := viewertoken.NewKeySet(keys...)
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	sfu := testfleet.NewPionAnswerer(t)
	f := testfleet.Start(t, testfleet.Options{TokenKeys: set(oldK), Workers: []testfleet.WorkerSpec{{ID: "w", Signaling: sfu}}})
	s := createSession(t, f, 0, testfleet.SessionsKey) // viewer token signed by old
	phase1 := startReplica(t, f, replica.Options{TokenKeys: set(oldK, newK)})
	phase2 := startReplica(t, f, replica.Options{TokenKeys: set(newK, oldK)})
	after := startReplica(t, f, replica.Options{TokenKeys: set(newK)})

	newTok := func(r *replica.Replica) string {
		c, err := apiclient.New(apiclient.Options{BaseURL: r.URL(), APIKey: testfleet.SessionsKey})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.CreateToken(context.Background(), s.ID, []string{"subscribe"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	whep := func(r *replica.Replica, token string) int {
		t.Helper()
		_, offer := testfleet.NewPeer(t, testfleet.Viewer)
		req, err := http.NewRequest("POST", r.URL()+"/v1/sessions/"+s.ID+"/whep", strings.NewReader(offer))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/sdp")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	fromPhase1, fromPhase2 := newTok(phase1), newTok(phase2)
	for _, tt := range []struct {
		name  string
		r     *replica.Replica
		token string
		want  int
	}{
		{"old token, old replica", f.Replicas[0], s.ViewerToken, 201},
		{"old token, new key listed second", phase1, s.ViewerToken, 201},
		{"phase 1 still signs with old", f.Replicas[0], fromPhase1, 201},
		{"old token, new key signing", phase2, s.ViewerToken, 201},
		{"new token, replica listing both", phase1, fromPhase2, 201},
		{"new token, old key removed", after, fromPhase2, 201},
		{"old token, old key removed", after, s.ViewerToken, 401},
		{"new token, replica without the new key", f.Replicas[0], fromPhase2, 401},
	} {
		if got := whep(tt.r, tt.token); got != tt.want {
			t.Fatalf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

// testCert writes a self-signed ECDSA certificate for 127.0.0.1 and
// returns its files and a pool that trusts it.
func testCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "avatarfleet test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestRESTOverTLS: with a certificate and key the replica serves the API
// over TLS only: a client trusting the certificate creates a session and
// gets https URLs; plain HTTP and untrusting clients are refused. Missing
// or broken files fail the start.
func TestRESTOverTLS(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w"}}})
	certFile, keyFile, pool := testCert(t)
	r := startReplica(t, f, replica.Options{TokenKeys: f.TokenKeys, TLSCertFile: certFile, TLSKeyFile: keyFile})
	if !strings.HasPrefix(r.URL(), "https://") {
		t.Fatalf("URL %s", r.URL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	c, err := apiclient.New(apiclient.Options{BaseURL: r.URL(), APIKey: testfleet.SessionsKey, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	// A replica just started may not have listed the fleet yet: wait until
	// it says it is ready (its worker cache synced), over TLS too.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(r.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica over TLS not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// This test is about TLS: a worker briefly marked down by a slow
	// health check on a loaded machine only delays the create.
	s, err := c.CreateSession(context.Background(), apiv1.CreateSessionRequest{}, "")
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		s, err = c.CreateSession(context.Background(), apiv1.CreateSessionRequest{}, "")
	}
	if err != nil {
		t.Fatalf("create over TLS: %v", err)
	}
	if !strings.HasPrefix(s.WHEPURL, "https://") {
		t.Fatalf("whep_url %s over TLS", s.WHEPURL)
	}
	if _, err := c.CreateToken(context.Background(), s.ID, []string{"publish"}, 0); err != nil {
		t.Fatalf("token over TLS: %v", err)
	}

	plain, err := http.Get("http://" + r.Addr() + "/healthz")
	if err == nil {
		plain.Body.Close()
		if plain.StatusCode == 200 {
			t.Fatal("plain HTTP served by the TLS listener")
		}
	}
	untrusting := &http.Client{Transport: &http.Transport{}}
	defer untrusting.CloseIdleConnections()
	if resp, err := untrusting.Get(r.URL() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a client that does not trust the certificate connected")
	}

	for _, tt := range []struct{ name, cert, key string }{
		{"key without certificate", "", keyFile},
		{"missing file", certFile, filepath.Join(t.TempDir(), "nope.pem")},
		{"certificate as key", certFile, certFile},
	} {
		keys := &auth.Keys{}
		_ = keys.Add(testfleet.SessionsKey, auth.ScopeSessions)
		_, err := replica.New(context.Background(), replica.Options{Listen: "127.0.0.1:0", Keys: keys, TokenKeys: f.TokenKeys,
			Etcd: f.ControlPlaneEtcd(), NATS: f.ControlPlaneNATS(), TLSCertFile: tt.cert, TLSKeyFile: tt.key})
		if err == nil || !strings.Contains(err.Error(), "TLS") {
			t.Fatalf("%s: %v", tt.name, err)
		}
	}
}

// TestLastEventIDValidated: a Last-Event-ID that is not a sequence number,
// or whose successor overflows, is 400 invalid_request, not 500.
func TestLastEventIDValidated(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{})
	for _, id := range []string{"18446744073709551615", "18446744073709551616", "-1", "abc", "1e3", "0x10"} {
		r := f.MustDo(0, "GET", "/v1/events", testfleet.SessionsKey, nil, "Last-Event-ID", id)
		if r.Status != 400 || errorCode(t, r) != apiv1.CodeInvalidRequest {
			t.Fatalf("Last-Event-ID %q: %d %s", id, r.Status, r.Body)
		}
	}
}
