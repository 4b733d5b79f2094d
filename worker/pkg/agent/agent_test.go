package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/health"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
)

var servers *fleettest.Servers

func TestMain(m *testing.M) { fleettest.Main(m, &servers) }

// holderRuntime is the agent's runtime in these tests: slots without media.
func holderRuntime(devs []*fleetv1.GPU, log *slog.Logger) (runtime.Runtime, error) {
	return runtimetest.NewHolder(devs, log), nil
}

// running is an agent under test.
type running struct {
	agent  *Agent
	store  *fleetstore.Store // the control plane's view, same prefix
	client fleetv1.WorkerServiceClient
	stop   context.CancelFunc // requests the drain
	done   chan struct{}      // closed when Run returns, with its result in err
	err    error
}

// wait returns Run's result, failing the test if it takes too long.
func (r *running) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %s", timeout)
		return nil
	}
}

func startAgent(t *testing.T, id string, tweak func(*Options)) *running {
	t.Helper()
	opts := Options{
		ID:            id,
		EtcdEndpoints: servers.Etcd.Endpoints(),
		EtcdPrefix:    servers.Prefix(t),
		NATSURL:       servers.NATS.URL(),
		GRPCListen:    "127.0.0.1:0",
		NewRuntime:    holderRuntime,
		Devices:       []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 2, Cpu: true}},
		LeaseTTL:      2 * time.Second,
		DrainTimeout:  time.Second,
		Version:       "test",
		TLS:           servers.WorkerTLS(t, id),
	}
	if tweak != nil {
		tweak(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{agent: a, store: servers.Store(t), stop: cancel, done: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	})
	select {
	case <-a.Registered():
	case <-r.done:
		t.Fatalf("Run ended before registering: %v", r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not register")
	}
	var conn *grpc.ClientConn
	if opts.TLS != nil {
		conn = servers.DialWorker(t, id, a.GRPCAddr())
	} else {
		var err error
		if conn, err = grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
	}
	r.client = fleetv1.NewWorkerServiceClient(conn)
	return r
}

// place reserves a slot the way the control plane does and starts the
// session on the worker.
func (r *running) place(t *testing.T, id string, slot uint32) *fleetv1.Session {
	t.Helper()
	sess := r.reserve(t, id, slot)
	resp, err := r.client.StartSession(t.Context(), &fleetv1.StartSessionRequest{Session: sess})
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	if resp.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("start %s: state %s", id, resp.GetState())
	}
	return sess
}

func (r *running) reserve(t *testing.T, id string, slot uint32) *fleetv1.Session {
	t.Helper()
	resp, err := servers.ClientOf(r.store).Get(t.Context(), r.store.Keys().Worker(r.agent.ID()))
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("worker record: %v", err)
	}
	kv := resp.Kvs[0]
	sess := &fleetv1.Session{Id: id, State: fleetv1.SessionState_SESSION_STATE_STARTING}
	_, ok, err := r.store.Reserve(t.Context(), fleetstore.Reservation{
		Worker: r.agent.ID(), WorkerLease: clientv3.LeaseID(kv.Lease), WorkerRevision: kv.ModRevision, Slot: slot,
	}, sess)
	if err != nil || !ok {
		t.Fatalf("reserve %s: ok=%v err=%v", id, ok, err)
	}
	return sess
}

func (r *running) record(t *testing.T) (*fleetv1.Worker, clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := servers.ClientOf(r.store).Get(t.Context(), r.store.Keys().Worker(r.agent.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, false
	}
	w, err := fleetstore.DecodeWorker(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return w, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func (r *running) session(t *testing.T, id string) *fleetv1.Session {
	t.Helper()
	s, _, err := r.store.Session(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (r *running) slotFree(t *testing.T, slot uint32) bool {
	t.Helper()
	resp, err := servers.ClientOf(r.store).Get(t.Context(), r.store.Keys().Slot(r.agent.ID(), 0, slot))
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Kvs) == 0
}

func TestAgentRegistersServesAndAnswersHealth(t *testing.T) {
	r := startAgent(t, servers.Name(t, "w"), nil)
	w, lease, ok := r.record(t)
	if !ok || lease == clientv3.NoLease {
		t.Fatal("no worker record under a lease")
	}
	if w.GetGrpcAddress() != r.agent.GRPCAddr() || w.GetState() != fleetv1.WorkerState_WORKER_STATE_ACTIVE ||
		len(w.GetGpus()) != 1 || w.GetGpus()[0].GetSlots() != 2 || w.GetVersion() != "test" {
		t.Fatalf("record = %v (grpc bound at %s)", w, r.agent.GRPCAddr())
	}
	if w.GetMediaAddress() != "127.0.0.1:50000" {
		t.Fatalf("media address = %q", w.GetMediaAddress())
	}

	r.place(t, "s1", 0)
	msg, err := servers.NATSConn(t).Request(fleetbus.HealthSubject(r.agent.ID()), nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rep health.Report
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatal(err)
	}
	if want := (health.Report{ID: r.agent.ID(), State: "active", Sessions: 1, Version: "test"}); rep != want {
		t.Fatalf("health = %+v, want %+v", rep, want)
	}
	// A start with no reservation in etcd is refused.
	_, err = r.client.StartSession(t.Context(), &fleetv1.StartSessionRequest{Session: &fleetv1.Session{Id: "forged", WorkerId: r.agent.ID(), Slot: 1}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("forged start: %v", err)
	}
}

func TestSlotDeletionStopsLocalSession(t *testing.T) {
	r := startAgent(t, servers.Name(t, "w"), nil)
	r.place(t, "s1", 0)
	r.place(t, "s2", 1)
	// The control plane ends s1 in etcd (DELETE /v1/sessions/s1) and its
	// StopSession call is lost: the slot watch must stop it anyway.
	if _, ended, err := r.store.EndSession(t.Context(), "s1", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil || !ended {
		t.Fatalf("EndSession: %v %v", ended, err)
	}
	fleettest.Eventually(t, 5*time.Second, "s1 to stop on the worker", func() bool {
		ids := r.agent.Runtime().Sessions()
		return len(ids) == 1 && ids[0] == "s2"
	})
	_, err := r.client.SessionStatus(t.Context(), &fleetv1.SessionStatusRequest{SessionId: "s1"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("status of stopped session: %v", err)
	}
}

// TestRefusedRestartKeepsWatchingRunningSession: a bogus start of a running
// session on another slot is refused and must not stop the slot watch from
// following the session's real slot.
func TestRefusedRestartKeepsWatchingRunningSession(t *testing.T) {
	r := startAgent(t, servers.Name(t, "w"), nil)
	r.place(t, "s1", 0)
	_, lease, _ := r.record(t)
	if _, err := servers.ClientOf(r.store).Put(t.Context(), r.store.Keys().Slot(r.agent.ID(), 0, 1), "s1", clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	_, err := r.client.StartSession(t.Context(), &fleetv1.StartSessionRequest{Session: &fleetv1.Session{Id: "s1", WorkerId: r.agent.ID(), Slot: 1}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("start on a second slot: %v", err)
	}
	if _, _, err := r.store.EndSession(t.Context(), "s1", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil {
		t.Fatal(err)
	}
	fleettest.Eventually(t, 5*time.Second, "s1 to stop", func() bool { return len(r.agent.Runtime().Sessions()) == 0 })
}

func TestSessionEndedByRuntimeIsRecorded(t *testing.T) {
	r := startAgent(t, servers.Name(t, "w"), nil)
	r.place(t, "boom", 1)
	holder := r.agent.Runtime().(*runtimetest.Holder)
	if err := holder.End("boom", fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_ERROR, "model error"); err != nil {
		t.Fatal(err)
	}
	// The record says so (the control plane derives session.failed from it).
	fleettest.Eventually(t, 5*time.Second, "the record to say failed", func() bool {
		return r.session(t, "boom").GetState() == fleetv1.SessionState_SESSION_STATE_FAILED
	})
	s := r.session(t, "boom")
	if s.GetState() != fleetv1.SessionState_SESSION_STATE_FAILED || s.GetEndReason() != fleetv1.EndReason_END_REASON_ERROR ||
		s.GetEndMessage() != "model error" || s.GetEndedAt() == nil {
		t.Fatalf("record = %v", s)
	}
	if !r.slotFree(t, 1) {
		t.Fatal("slot not freed")
	}
}

func TestDrainEndsSessionsAtDeadlineAndRevokesLease(t *testing.T) {
	r := startAgent(t, servers.Name(t, "w"), func(o *Options) { o.DrainTimeout = 1500 * time.Millisecond })
	r.place(t, "stays", 0)
	r.place(t, "leaves", 1)
	_, lease, _ := r.record(t)

	r.stop() // SIGTERM
	// The record says DRAINING (worker events derive from etcd).
	fleettest.Eventually(t, 5*time.Second, "the record to say draining", func() bool {
		w, _, ok := r.record(t)
		return ok && w.GetState() == fleetv1.WorkerState_WORKER_STATE_DRAINING
	})
	w, _, ok := r.record(t)
	// It has sessions, so it asks the control plane to migrate them.
	if !ok || w.GetState() != fleetv1.WorkerState_WORKER_STATE_DRAINING || !w.GetMigrate() {
		t.Fatalf("record during drain = %v", w)
	}
	// New sessions are refused, even with a valid reservation.
	if _, err := servers.ClientOf(r.store).Put(t.Context(), r.store.Keys().Slot(r.agent.ID(), 0, 9), "late", clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	_, err := r.client.StartSession(t.Context(), &fleetv1.StartSessionRequest{Session: &fleetv1.Session{Id: "late", WorkerId: r.agent.ID(), Slot: 9}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("start while draining: %v", err)
	}
	// One session ends on its own account during the drain (deleted by its
	// owner: the control plane ends it in etcd and calls StopSession).
	if _, _, err := r.store.EndSession(t.Context(), "leaves", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.StopSession(t.Context(), &fleetv1.StopSessionRequest{SessionId: "leaves"}); err != nil {
		t.Fatal(err)
	}

	// The other one is ended with reason drained at the deadline.
	fleettest.Eventually(t, 10*time.Second, "the drained session's record to say ended", func() bool {
		return r.session(t, "stays").GetState() == fleetv1.SessionState_SESSION_STATE_ENDED
	})
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run after drain: %v", err)
	}
	if s := r.session(t, "stays"); s.GetState() != fleetv1.SessionState_SESSION_STATE_ENDED || s.GetEndReason() != fleetv1.EndReason_END_REASON_DRAINED {
		t.Fatalf("drained session record = %v", s)
	}
	if s := r.session(t, "leaves"); s.GetEndReason() != fleetv1.EndReason_END_REASON_DELETED {
		t.Fatalf("deleted session record = %v", s)
	}
	if _, _, ok := r.record(t); ok {
		t.Fatal("worker record still there after the drain")
	}
	if ttl, err := servers.ClientOf(r.store).TimeToLive(t.Context(), lease); err != nil || ttl.TTL != -1 {
		t.Fatalf("lease after drain: ttl=%v err=%v, want revoked", ttl, err)
	}
}

func TestLeaseLossStopsSessionsAndReregisters(t *testing.T) {
	r := startAgent(t, servers.Name(t, "w"), nil)
	r.place(t, "s1", 0)
	_, lease, _ := r.record(t)
	// Lease gone (expired during a partition, or revoked): the slots are gone.
	if _, err := servers.ClientOf(r.store).Revoke(t.Context(), lease); err != nil {
		t.Fatal(err)
	}
	fleettest.Eventually(t, 5*time.Second, "sessions to stop", func() bool { return len(r.agent.Runtime().Sessions()) == 0 })
	fleettest.Eventually(t, 5*time.Second, "re-registration", func() bool {
		_, l, ok := r.record(t)
		return ok && l != lease
	})
	// The re-registered worker takes new sessions.
	r.place(t, "s2", 0)
}

func TestAbortLeavesLeaseToExpire(t *testing.T) {
	r := startAgent(t, servers.Name(t, "w"), nil)
	r.place(t, "s1", 0)
	r.agent.Abort()
	if err := r.wait(t, 5*time.Second); !errors.Is(err, ErrAborted) {
		t.Fatalf("Run after Abort = %v", err)
	}
	if _, _, ok := r.record(t); !ok {
		t.Fatal("record removed at once; a crash leaves it to the lease")
	}
	fleettest.Eventually(t, 6*time.Second, "lease expiry", func() bool {
		_, _, ok := r.record(t)
		return !ok && r.slotFree(t, 0)
	})
	if s := r.session(t, "s1"); fleetstore.Terminal(s.GetState()) {
		t.Fatalf("the worker must not end sessions on a crash; the control plane does: %v", s)
	}
}

func TestSeveralAgentsShareOneFleet(t *testing.T) {
	a := startAgent(t, servers.Name(t, "a"), nil)
	b := startAgent(t, servers.Name(t, "b"), nil)
	if a.agent.GRPCAddr() == b.agent.GRPCAddr() {
		t.Fatal("agents share a gRPC address")
	}
	resp, err := servers.ClientOf(a.store).Get(t.Context(), a.store.Keys().Workers(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 2 {
		t.Fatalf("workers registered: %d, %v", resp.Count, err)
	}
	a.place(t, "on-a", 0)
	b.place(t, "on-b", 0)
}

func TestNewRejectsBadOptions(t *testing.T) {
	base := func() Options {
		return Options{ID: "w1", EtcdEndpoints: []string{"http://127.0.0.1:1"}, NATSURL: "nats://127.0.0.1:1", GRPCListen: "127.0.0.1:0", NewRuntime: holderRuntime}
	}
	tests := []struct {
		name  string
		tweak func(*Options)
	}{
		{"bad id", func(o *Options) { o.ID = "a/b" }},
		{"empty id", func(o *Options) { o.ID = "" }},
		{"no etcd", func(o *Options) { o.EtcdEndpoints = nil }},
		{"no nats", func(o *Options) { o.NATSURL = "" }},
		{"ttl too short", func(o *Options) { o.LeaseTTL = 500 * time.Millisecond }},
		{"ttl too long", func(o *Options) { o.LeaseTTL = 61 * time.Second }},
		{"negative drain", func(o *Options) { o.DrainTimeout = -time.Second }},
		{"bad media port", func(o *Options) { o.MediaPort = 70000 }},
		{"bad public ip", func(o *Options) { o.PublicIP = "example.com" }},
		{"bad advertise", func(o *Options) { o.AdvertiseAddress = "nohostport" }},
		{"device without slots", func(o *Options) { o.Devices = []*fleetv1.GPU{{Index: 0}} }},
		{"unbindable listen", func(o *Options) { o.GRPCListen = "256.0.0.1:0" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			tt.tweak(&o)
			if a, err := New(o); err == nil {
				_ = a.Close()
				t.Fatal("New accepted bad options")
			}
		})
	}
	a, err := New(base())
	if err != nil {
		t.Fatal(err)
	}
	if a.opts.LeaseTTL != DefaultLeaseTTL || a.opts.MediaPort != DefaultMediaPort || len(a.Devices()) != 1 || !a.Devices()[0].GetCpu() {
		t.Fatalf("defaults not applied: %+v", a.opts)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); err == nil {
		t.Fatal("Run after Close succeeded")
	}
}

func TestDeriveAdvertise(t *testing.T) {
	bound := &net.TCPAddr{IP: net.IPv4zero, Port: 9090}
	tests := []struct {
		listen, want string
	}{
		{":9090", "127.0.0.1:9090"},
		{"0.0.0.0:9090", "127.0.0.1:9090"},
		{"[::]:9090", "127.0.0.1:9090"},
		{"10.0.0.5:9090", "10.0.0.5:9090"},
		{"worker-3.internal:9090", "worker-3.internal:9090"},
		{"[2001:db8::1]:9090", "[2001:db8::1]:9090"},
	}
	for _, tt := range tests {
		if got := deriveAdvertise(tt.listen, bound); got != tt.want {
			t.Errorf("deriveAdvertise(%q) = %q, want %q", tt.listen, got, tt.want)
		}
	}
	// Port 0 listens advertise the port actually bound.
	if got := deriveAdvertise("127.0.0.1:0", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41234}); got != "127.0.0.1:41234" {
		t.Errorf("port-0 listen advertised %q", got)
	}
}

// The public (ICE) address is the media address, never the gRPC one.
func TestPublicIPNotAdvertisedForGRPC(t *testing.T) {
	a, err := New(Options{ID: "w", EtcdEndpoints: []string{"http://127.0.0.1:1"}, NATSURL: "nats://127.0.0.1:1",
		GRPCListen: "0.0.0.0:0", PublicIP: "203.0.113.7", NewRuntime: holderRuntime})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if h, _, _ := net.SplitHostPort(a.AdvertiseAddress()); h != "127.0.0.1" {
		t.Errorf("advertised gRPC %s, want loopback", a.AdvertiseAddress())
	}
	if h, _, _ := net.SplitHostPort(a.MediaAddress()); h != "203.0.113.7" {
		t.Errorf("media address %s, want the public IP", a.MediaAddress())
	}
}
