package workerclient

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// serveWorker serves an empty WorkerService with worker id's fleet
// certificate from ca on loopback and returns its address.
func serveWorker(t *testing.T, ca *fleetpki.CA, id string) string {
	t.Helper()
	m, err := ca.Material(fleetpki.Request{WorkerID: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(m.WorkerServer())))
	fleetv1.RegisterWorkerServiceServer(srv, fleetv1.UnimplementedWorkerServiceServer{})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

func call(t *testing.T, p *Pool, id, addr string) error {
	t.Helper()
	cl, err := p.Client(id, addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err = cl.SessionStatus(ctx, &fleetv1.SessionStatusRequest{SessionId: "s"})
	return err
}

func TestTLSPoolChecksWorkerIdentity(t *testing.T) {
	ca, err := fleetpki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ca.Material(fleetpki.Request{ControlPlane: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveWorker(t, ca, "w-1")
	p := NewTLSPool(cp)
	defer p.Close()

	// The worker's handler answered: the link is up and authenticated.
	if err := call(t, p, "w-1", addr); status.Code(err) != codes.Unimplemented {
		t.Fatalf("call to w-1: %v, want the server's Unimplemented", err)
	}
	// The same address reached as another worker is refused, naming both.
	err = call(t, p, "w-2", addr)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), fleetpki.WorkerURI("w-2")) ||
		!strings.Contains(err.Error(), fleetpki.WorkerURI("w-1")) {
		t.Fatalf("call to w-2 at w-1's address: %v, want refused naming both identities", err)
	}
	// A worker of another CA is refused.
	other, err := fleetpki.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(t, p, "w-3", serveWorker(t, other, "w-3")); status.Code(err) != codes.Unavailable {
		t.Fatalf("call to a worker of another CA: %v, want refused", err)
	}
	// A plaintext pool cannot talk to a TLS worker.
	plain := NewPool()
	defer plain.Close()
	if err := call(t, plain, "w-1", addr); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext call: %v, want refused", err)
	}
}

// A worker that is gone has its connections closed; the next call dials
// afresh and works.
func TestForgetWorkerClosesItsConnections(t *testing.T) {
	ca, err := fleetpki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ca.Material(fleetpki.Request{ControlPlane: true})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2, b := serveWorker(t, ca, "w-1"), serveWorker(t, ca, "w-1"), serveWorker(t, ca, "w-2")
	p := NewTLSPool(cp)
	defer p.Close()
	for _, c := range []struct{ id, addr string }{{"w-1", a1}, {"w-1", a2}, {"w-2", b}} {
		if err := call(t, p, c.id, c.addr); status.Code(err) != codes.Unimplemented {
			t.Fatalf("call to %s at %s: %v", c.id, c.addr, err)
		}
	}
	old, err := p.Client("w-1", a1)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 {
		t.Fatalf("%d connections, want 3", p.Len())
	}
	p.ForgetWorker("w-1")
	if p.Len() != 1 {
		t.Fatalf("%d connections after forgetting w-1, want w-2's only", p.Len())
	}
	// A client taken before is closed: its calls fail at once.
	if _, err := old.SessionStatus(t.Context(), &fleetv1.SessionStatusRequest{SessionId: "s"}); status.Code(err) != codes.Canceled {
		t.Fatalf("call on a forgotten connection: %v, want Canceled (closed)", err)
	}
	if err := call(t, p, "w-1", a1); status.Code(err) != codes.Unimplemented {
		t.Fatalf("call after forgetting: %v", err)
	}
}
