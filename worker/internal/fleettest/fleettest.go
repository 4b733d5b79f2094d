// Package fleettest runs the real etcd and NATS servers the worker's tests
// use: one embedded etcd and one embedded NATS (with the events stream) per
// test binary, started in TestMain, with a fresh key prefix and fresh names
// per test so tests stay independent without paying a server start each.
package fleettest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Servers are the running servers of one test binary.
type Servers struct {
	Etcd *embedded.EtcdCluster
	NATS *embedded.NATSServer
	// CA is the fleet CA of the test binary: workers under test serve
	// mutual TLS with certificates from it (WorkerTLS), and tests call them
	// as a control plane would (ControlPlaneTLS, DialWorker).
	CA *fleetpki.CA

	mu      sync.Mutex
	nonces  map[testing.TB]string // per running test; see nonce
	clients sync.Map              // *fleetstore.Store → its *clientv3.Client
}

// Main is a TestMain body: it starts the servers into *s, runs the tests,
// stops the servers, then fails the binary if goroutines leaked.
func Main(m *testing.M, s **Servers, opts ...goleak.Option) {
	goleak.VerifyTestMain(runner{m: m, s: s}, opts...)
}

type runner struct {
	m *testing.M
	s **Servers
}

func (r runner) Run() int {
	dir, err := os.MkdirTemp("", "worker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleettest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleettest:", err)
		return 1
	}
	defer srv.close()
	*r.s = srv
	return r.m.Run()
}

func start(dir string) (*Servers, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{Dir: filepath.Join(dir, "etcd"), NoFsync: true})
	if err != nil {
		return nil, err
	}
	ns, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		etcd.Close()
		return nil, err
	}
	ca, err := fleetpki.NewCA("worker tests CA", time.Hour)
	if err != nil {
		ns.Close()
		etcd.Close()
		return nil, err
	}
	s := &Servers{Etcd: etcd, NATS: ns, CA: ca, nonces: map[testing.TB]string{}}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		s.close()
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	defer nc.Close()
	pub, err := fleetbus.NewPublisher(nc)
	if err != nil {
		s.close()
		return nil, err
	}
	if _, err := fleetbus.EnsureStream(ctx, pub.JetStream(), time.Hour); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *Servers) close() {
	s.NATS.Close()
	s.Etcd.Close()
}

// nonce is random per running test and stable within it, so names and
// prefixes never collide across tests (or -count repetitions of one test)
// sharing the servers.
func (s *Servers) nonce(t testing.TB) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.nonces[t]; ok {
		return n
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	n := hex.EncodeToString(b[:])
	s.nonces[t] = n
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.nonces, t)
	})
	return n
}

// Name is a valid worker or session name unique to the running test.
func (s *Servers) Name(t testing.TB, prefix string) string {
	return prefix + "-" + s.nonce(t)
}

// Prefix is an etcd key prefix unique to the running test.
func (s *Servers) Prefix(t testing.TB) string { return "/t-" + s.nonce(t) + "/" }

// WorkerTLS is worker id's fleet TLS material (a certificate for
// 127.0.0.1 and localhost from CA).
func (s *Servers) WorkerTLS(t testing.TB, id string) *fleetpki.Material {
	t.Helper()
	m, err := s.CA.Material(fleetpki.Request{WorkerID: id, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ControlPlaneTLS is a control plane's fleet TLS material from CA.
func (s *Servers) ControlPlaneTLS(t testing.TB) *fleetpki.Material {
	t.Helper()
	m, err := s.CA.Material(fleetpki.Request{ControlPlane: true})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// DialWorker connects to worker id at addr as a control plane: mutual TLS
// that checks the worker's identity. The connection closes when the test
// ends.
func (s *Servers) DialWorker(t testing.TB, id, addr string) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(s.ControlPlaneTLS(t).ControlPlaneClient(id))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// EtcdClient returns a client closed when the test ends.
func (s *Servers) EtcdClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := s.Etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Store returns a store with a client of its own under a test-unique prefix.
func (s *Servers) Store(t testing.TB) *fleetstore.Store {
	t.Helper()
	cli := s.EtcdClient(t)
	store := fleetstore.New(cli, fleetstore.NewKeys(s.Prefix(t)))
	s.clients.Store(store, cli)
	t.Cleanup(func() { s.clients.Delete(store) })
	return store
}

// ClientOf is the raw etcd client under a store from Store, for tests that
// change etcd behind the store's back (only fleetstore talks to etcd in
// the fleet's own code).
func (s *Servers) ClientOf(store *fleetstore.Store) *clientv3.Client {
	cli, ok := s.clients.Load(store)
	if !ok {
		panic("fleettest: ClientOf a store not made by Servers.Store")
	}
	return cli.(*clientv3.Client)
}

// NATSConn returns a connection closed when the test ends.
func (s *Servers) NATSConn(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.NATS.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Publisher returns an event publisher on a connection of its own.
func (s *Servers) Publisher(t testing.TB) *fleetbus.Publisher {
	t.Helper()
	pub, err := fleetbus.NewPublisher(s.NATSConn(t))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// Events subscribes to lifecycle events on subject (wildcards allowed) and
// returns them in order of arrival.
func (s *Servers) Events(t testing.TB, subject string) <-chan *fleetv1.Event {
	t.Helper()
	nc := s.NATSConn(t)
	out := make(chan *fleetv1.Event, 256)
	// The callback must not touch t: it may run after the test ended.
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		e, err := fleetbus.DecodeEvent(m.Data)
		if err != nil {
			e = &fleetv1.Event{Type: "undecodable: " + err.Error()}
		}
		select {
		case out <- e:
		default: // a test that floods itself sees the gap in WaitEvent
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// Make sure the server knows the subscription before anything publishes.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return out
}

// WaitEvent returns the next event of type typ from events, skipping others.
func WaitEvent(t testing.TB, events <-chan *fleetv1.Event, typ string, timeout time.Duration) *fleetv1.Event {
	t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case e := <-events:
			if e.GetType() == typ {
				return e
			}
			seen = append(seen, e.GetType())
		case <-deadline:
			t.Fatalf("no %s event within %s (saw %s)", typ, timeout, strings.Join(seen, ", "))
			return nil
		}
	}
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
