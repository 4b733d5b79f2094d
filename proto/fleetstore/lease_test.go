package fleetstore_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/proxy"
	"go.uber.org/zap"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// A revoked lease (the leader fencing a worker) ends the session at once.
func TestLeaseSessionEndsWhenRevoked(t *testing.T) {
	s, _ := startStore(t)
	ctx := t.Context()
	lease, err := s.GrantLease(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.KeepLease(context.Background(), lease, 5*time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Orphan()
	if err := s.RevokeLease(ctx, lease); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ls.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session still running 5 s after its lease was revoked")
	}
	if !errors.Is(ls.Err(), fleetstore.ErrLeaseLost) {
		t.Fatalf("Err = %v, want ErrLeaseLost", ls.Err())
	}
	// Revoking a lease that is gone is not an error.
	if err := s.RevokeLease(ctx, lease); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
}

// A client cut off from etcd fences its session before etcd could expire
// the lease: at the fence the lease still lives, and it is gone later.
func TestLeaseSessionFencesBeforeExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{Dir: t.TempDir(), NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	direct, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	target, err := url.Parse(cluster.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	px := proxy.NewServer(proxy.ServerConfig{Logger: zap.NewNop(),
		From: url.URL{Scheme: "tcp", Host: addr}, To: url.URL{Scheme: "tcp", Host: target.Host}})
	<-px.Ready()
	cut, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	s := fleetstore.New(cut, fleetstore.NewKeys("/lease/"))

	const ttl = 3 * time.Second
	lease, err := s.GrantLease(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.KeepLease(context.Background(), lease, ttl, 0)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a few renewals
	px.BlackholeTx()
	px.BlackholeRx()
	start := time.Now()
	select {
	case <-ls.Done():
	case <-time.After(3 * ttl):
		t.Fatal("session not fenced while cut off")
	}
	fenced := time.Since(start)
	if !errors.Is(ls.Err(), fleetstore.ErrLeaseFenced) {
		t.Fatalf("Err = %v, want ErrLeaseFenced", ls.Err())
	}
	ttlLeft, err := direct.TimeToLive(ctx, lease)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cut → fenced %s; the lease had %ds left in etcd", fenced.Round(time.Millisecond), ttlLeft.TTL)
	if ttlLeft.TTL < 0 {
		t.Fatalf("the lease expired before the session fenced itself")
	}
	px.UnblackholeTx()
	px.UnblackholeRx()
	_ = cut.Close()
	_ = px.Close()
}

// A reservation whose answer was lost is recognised as ours on read-back;
// another session's is not.
func TestReservedByReadsBackOwnReservation(t *testing.T) {
	s, cli := startStore(t)
	lease, rev := registerWorker(t, s, cli, "w1")
	r := fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev, GPU: 0, Slot: 1}
	sess := &fleetv1.Session{Id: "mine", Owner: "o", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	got, ok, err := s.Reserve(t.Context(), r, sess)
	if err != nil || !ok {
		t.Fatalf("Reserve: ok=%v err=%v", ok, err)
	}
	back, mine, err := fleetstore.ReservedBy(s, t.Context(), r, sess)
	if err != nil || !mine || back != got {
		t.Fatalf("read back own reservation: rev %d (want %d), mine %v, err %v", back, got, mine, err)
	}
	other := &fleetv1.Session{Id: "other", Owner: "o", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	if _, mine, err := fleetstore.ReservedBy(s, t.Context(), r, other); err != nil || mine {
		t.Fatalf("another session's reservation read back as ours: %v %v", mine, err)
	}
}
