package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSRestart: a stopped server comes back on the same address with
// its JetStream store, and a client that kept reconnecting carries on.
func TestNATSRestart(t *testing.T) {
	ns, err := StartNATS(NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	url := ns.URL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "r.1", []byte("before")); err != nil {
		t.Fatal(err)
	}
	ns.Stop()
	dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = js.Publish(dctx, "r.1", []byte("during"), jetstream.WithRetryAttempts(0))
	dcancel()
	if err == nil {
		t.Fatal("a publish was acknowledged while the server was down")
	}
	if err := ns.Restart(); err != nil {
		t.Fatal(err)
	}
	if ns.URL() != url {
		t.Fatalf("restarted on %s, want %s", ns.URL(), url)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := js.Publish(ctx, "r.1", []byte("after")); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "R")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil || string(msg.Data) != "before" {
		t.Fatalf("first message after the restart: %v %v", msg, err)
	}
	if err := ns.Restart(); err != nil {
		t.Fatalf("restart of a running server: %v", err)
	}
}
