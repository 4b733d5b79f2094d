package agent

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// speak makes one WorkerService call over conn. A call that reaches the
// worker's handlers answers NotFound (no such session); one refused by the
// transport answers Unavailable.
func speak(t *testing.T, conn *grpc.ClientConn) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := fleetv1.NewWorkerServiceClient(conn).SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "no-such-session", Text: "hi"})
	return err
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// The worker's gRPC API answers only a control plane of its fleet; the
// control plane talks only to the worker it meant.
func TestWorkerGRPCMutualTLS(t *testing.T) {
	id := servers.Name(t, "w-tls")
	r := startAgent(t, id, nil)
	addr := r.agent.GRPCAddr()
	cp := servers.ControlPlaneTLS(t)

	other, err := fleetpki.NewCA("another fleet", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCP, err := other.Material(fleetpki.Request{ControlPlane: true})
	if err != nil {
		t.Fatal(err)
	}
	asWorker := servers.WorkerTLS(t, "w-imposter")
	// A client that trusts the worker but presents cert (nil: none).
	clientWith := func(cert *fleetpki.Material) credentials.TransportCredentials {
		c := &tls.Config{RootCAs: cp.Roots, MinVersion: tls.VersionTLS13}
		if cert != nil {
			c.Certificates = []tls.Certificate{cert.Cert}
		}
		return credentials.NewTLS(c)
	}

	refused := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"plaintext", insecure.NewCredentials()},
		{"no client certificate", clientWith(nil)},
		{"control-plane certificate of another CA", clientWith(otherCP)},
		{"worker certificate of the fleet CA", clientWith(asWorker)},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := speak(t, dial(t, addr, tt.creds))
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("call answered %v, want the connection refused (Unavailable)", err)
			}
		})
	}

	t.Run("control plane of the fleet", func(t *testing.T) {
		err := speak(t, dial(t, addr, credentials.NewTLS(cp.ControlPlaneClient(id))))
		if status.Code(err) != codes.NotFound {
			t.Fatalf("call answered %v, want the worker's NotFound", err)
		}
	})
	t.Run("worker certificate names another id", func(t *testing.T) {
		err := speak(t, dial(t, addr, credentials.NewTLS(cp.ControlPlaneClient("w-expected"))))
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), fleetpki.WorkerURI("w-expected")) {
			t.Fatalf("call answered %v, want refused naming %s", err, fleetpki.WorkerURI("w-expected"))
		}
	})
	t.Run("worker certificate does not cover the dialled host", func(t *testing.T) {
		c := cp.ControlPlaneClient(id)
		c.ServerName = "elsewhere.example"
		err := speak(t, dial(t, addr, credentials.NewTLS(c)))
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "elsewhere.example") {
			t.Fatalf("call answered %v, want refused", err)
		}
	})
}
