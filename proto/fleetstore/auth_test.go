package fleetstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/proto/internal/testpki"
)

// securedEtcd is a 3-member embedded etcd serving clients over TLS, with
// the fleet's roles and authentication on.
type securedEtcd struct {
	cfg  fleetconn.EtcdConfig // endpoints and TLS, no credentials
	keys fleetstore.Keys
	auth fleetstore.Auth
}

func startSecuredEtcd(t *testing.T) *securedEtcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ca := testpki.New(t, "etcd CA")
	srv := ca.Server(t, "etcd")
	cluster, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{
		Dir: t.TempDir(), Members: 3, NoFsync: true, BcryptCost: 4,
		ClientTLS: &transport.TLSInfo{CertFile: srv.CertFile, KeyFile: srv.KeyFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	s := &securedEtcd{
		cfg:  fleetconn.EtcdConfig{Endpoints: cluster.Endpoints(), TLS: fleetconn.TLSFiles{CAFile: ca.CAFile}},
		keys: fleetstore.NewKeys("/fleet-a/"),
		auth: fleetstore.Auth{RootPassword: "root-pw", ControlPlanePassword: "cp-pw",
			Workers: map[string]string{"w1": "w1-pw", "w2.example": "w2-pw"}},
	}
	setup, err := fleetconn.Etcd(ctx, s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer setup.Close()
	if err := fleetstore.SetupAuth(ctx, setup, s.keys, s.auth); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *securedEtcd) client(t *testing.T, user, password string) *clientv3.Client {
	t.Helper()
	cfg := s.cfg
	cfg.Username, cfg.Password = user, password
	cli, err := fleetconn.Etcd(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect as %q: %v", user, err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func denied(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("%s: err = %v, want permission denied", what, err)
	}
}

func TestEtcdRolesOnAuthenticatedCluster(t *testing.T) {
	s := startSecuredEtcd(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// Without credentials, or with wrong ones, nothing is served.
	anon := s.client(t, "", "")
	if _, err := anon.Get(ctx, s.keys.Prefix(), clientv3.WithPrefix()); err == nil {
		t.Fatal("anonymous read served")
	}
	if _, err := anon.Put(ctx, s.keys.Worker("w1"), "x"); err == nil {
		t.Fatal("anonymous write served")
	}
	bad := s.cfg
	bad.Username, bad.Password = fleetstore.WorkerUser("w1"), "w2-pw"
	if cli, err := fleetconn.Etcd(ctx, bad); err == nil {
		_, err = cli.Get(ctx, s.keys.Worker("w1"))
		_ = cli.Close()
		if err == nil {
			t.Fatal("wrong password served")
		}
	}

	cpCli := s.client(t, fleetstore.ControlPlaneUser, s.auth.ControlPlanePassword)
	cp := fleetstore.New(cpCli, s.keys)
	w1Cli := s.client(t, fleetstore.WorkerUser("w1"), s.auth.Workers["w1"])
	w1 := fleetstore.New(w1Cli, s.keys)

	// The worker registers as worker/pkg/registration does: a lease kept
	// alive by a concurrency session, its record under it.
	grant, err := w1Cli.Grant(ctx, 10)
	if err != nil {
		t.Fatalf("worker grants a lease: %v", err)
	}
	sess, err := concurrency.NewSession(w1Cli, concurrency.WithLease(grant.ID), concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Orphan()
	if _, err := w1Cli.KeepAliveOnce(ctx, grant.ID); err != nil {
		t.Fatalf("worker keeps its lease alive: %v", err)
	}
	rec := &fleetv1.Worker{Id: "w1", Gpus: []*fleetv1.GPU{{Index: 0, Slots: 2}}}
	if err := w1.PutWorker(ctx, rec, grant.ID); err != nil {
		t.Fatalf("worker writes its record: %v", err)
	}
	if _, err := w1Cli.Get(ctx, s.keys.Worker("w1")); err != nil {
		t.Fatalf("worker reads its record: %v", err)
	}

	// The control plane places two sessions on it (its transactions read
	// and write across the prefix) and marks it down under its lease.
	wresp, err := cpCli.Get(ctx, s.keys.Worker("w1"))
	if err != nil || len(wresp.Kvs) != 1 {
		t.Fatalf("control plane reads the worker: %v", err)
	}
	var revs [2]int64
	for i, id := range []string{"s1", "s2"} {
		rev, ok, err := cp.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: grant.ID,
			WorkerRevision: wresp.Kvs[0].ModRevision, GPU: 0, Slot: uint32(i)}, &fleetv1.Session{Id: id, Owner: "o"})
		if err != nil || !ok {
			t.Fatalf("control plane reserves %s: ok=%v err=%v", id, ok, err)
		}
		revs[i] = rev
	}
	if _, err := cp.UpdateSession(ctx, &fleetv1.Session{Id: "s2", Owner: "o", WorkerId: "w1", Slot: 1,
		State: fleetv1.SessionState_SESSION_STATE_READY}, revs[1]); err != nil {
		t.Fatalf("control plane updates a session: %v", err)
	}
	// The control plane queues speech for s2 (a transaction guarded by the
	// record); the worker shortens the entry as it speaks.
	speechID, err := cp.EnqueueSpeech(ctx, "s2", "Hello. Goodbye.", false)
	if err != nil {
		t.Fatalf("control plane queues speech: %v", err)
	}
	if ok, err := w1.AckSpeech(ctx, "s2", speechID, "Hello. Goodbye.", "Goodbye."); err != nil || !ok {
		t.Fatalf("worker acks speech: ok=%v err=%v", ok, err)
	}
	if err := cp.SetDrained(ctx, "w1", true); err != nil {
		t.Fatal(err)
	}
	if err := cp.SetDown(ctx, "w1", grant.ID, true); err != nil {
		t.Fatalf("control plane marks the worker down: %v", err)
	}

	// The worker watches and reads its slots and their sessions, and ends
	// a session (record and slot in one transaction).
	slots, err := w1Cli.Get(ctx, s.keys.WorkerSlots("w1"), clientv3.WithPrefix())
	if err != nil || len(slots.Kvs) != 2 {
		t.Fatalf("worker reads its slots: %v (%d)", err, len(slots.Kvs))
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watch := w1Cli.Watch(clientv3.WithRequireLeader(wctx), s.keys.WorkerSlots("w1"), clientv3.WithPrefix(), clientv3.WithRev(slots.Header.Revision+1))
	if _, _, err := w1.Session(ctx, "s1"); err != nil {
		t.Fatalf("worker reads its session: %v", err)
	}
	if _, ended, err := w1.EndSession(ctx, "s1", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DRAINED, ""); err != nil || !ended {
		t.Fatalf("worker ends its session: ended=%v err=%v", ended, err)
	}
	// etcd can end a watch opened just as the client's auth token was
	// replaced ("invalid auth token"); a watcher then resumes from the
	// revision it asked for, as slotwatch does. Permission errors are not
	// retried.
	for attempt := 0; ; attempt++ {
		var wr clientv3.WatchResponse
		select {
		case wr = <-watch:
		case <-time.After(30 * time.Second):
			t.Fatal("worker's slot watch saw nothing")
		}
		err := wr.Err()
		if err != nil && attempt < 3 && strings.Contains(err.Error(), "invalid auth token") {
			watch = w1Cli.Watch(clientv3.WithRequireLeader(wctx), s.keys.WorkerSlots("w1"), clientv3.WithPrefix(), clientv3.WithRev(slots.Header.Revision+1))
			continue
		}
		if err != nil || len(wr.Events) != 1 || wr.Events[0].Type != clientv3.EventTypeDelete {
			t.Fatalf("worker's slot watch: %v %v", err, wr.Events)
		}
		break
	}
	stopWatch()

	// What the worker may not touch.
	otherLease, err := cpCli.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		err  func() error
	}{
		{"write another worker's record", func() error {
			return w1.PutWorker(ctx, &fleetv1.Worker{Id: "w2.example"}, grant.ID)
		}},
		{"read another worker's record", func() error { _, err := w1Cli.Get(ctx, s.keys.Worker("w2.example")); return err }},
		{"take a slot of another worker", func() error {
			_, err := w1Cli.Put(ctx, s.keys.Slot("w2.example", 0, 0), "s9")
			return err
		}},
		{"read another worker's slots", func() error {
			_, err := w1Cli.Get(ctx, s.keys.WorkerSlots("w2.example"), clientv3.WithPrefix())
			return err
		}},
		{"list every worker", func() error { _, err := w1Cli.Get(ctx, s.keys.Workers(), clientv3.WithPrefix()); return err }},
		{"lift its own drain mark", func() error { return w1.SetDrained(ctx, "w1", false) }},
		{"read fleet settings", func() error { _, err := w1Cli.Get(ctx, s.keys.Config("viewer-token-key")); return err }},
		{"campaign as a control plane", func() error { _, err := w1Cli.Put(ctx, s.keys.Leader()+"/x", "w1"); return err }},
		{"revoke a lease with others' keys", func() error {
			if _, err := cpCli.Put(ctx, s.keys.Worker("w2.example"), "x", clientv3.WithLease(otherLease.ID)); err != nil {
				t.Fatal(err)
			}
			_, err := w1Cli.Revoke(ctx, otherLease.ID)
			return err
		}},
		{"write outside the fleet prefix", func() error { _, err := w1Cli.Put(ctx, "/fleet-b/sessions/x", "x"); return err }},
	} {
		denied(t, "worker "+tc.what, tc.err())
	}
	// The control plane is bound to its prefix too.
	_, err = cpCli.Put(ctx, "/fleet-b/sessions/x", "x")
	denied(t, "control plane writes outside its prefix", err)

	// The worker deregisters: revoking its lease deletes its record, slot
	// and down mark.
	sess.Orphan()
	if _, err := w1Cli.Revoke(ctx, grant.ID); err != nil {
		t.Fatalf("worker revokes its lease: %v", err)
	}
	left, err := cpCli.Get(ctx, s.keys.Fleet(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	// Left: the drain mark (no lease) and w2.example's record (other lease).
	if left.Count != 2 {
		t.Fatalf("%d keys left under fleet/ after the worker's lease went, want 2", left.Count)
	}

	// Run again as root (authentication now on) to add a worker.
	root := s.client(t, fleetstore.RootUser, s.auth.RootPassword)
	more := s.auth
	more.Workers = map[string]string{"w3": "w3-pw"}
	if err := fleetstore.SetupAuth(ctx, root, s.keys, more); err != nil {
		t.Fatalf("SetupAuth again: %v", err)
	}
	w3 := s.client(t, fleetstore.WorkerUser("w3"), "w3-pw")
	if _, err := w3.Get(ctx, s.keys.Worker("w3")); err != nil {
		t.Fatalf("added worker reads its record: %v", err)
	}
	_, err = w3.Get(ctx, s.keys.Worker("w1"))
	denied(t, "added worker reads another's record", err)
}

// TestControlPlaneAdmin: ControlPlaneAdmin gives the control plane etcd's
// root role (it writes outside its prefix and attaches keys to a lease that
// holds a worker's keys without etcd checking each), and running SetupAuth
// again without it takes the role back.
func TestControlPlaneAdmin(t *testing.T) {
	s := startSecuredEtcd(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	root := s.client(t, fleetstore.RootUser, s.auth.RootPassword)
	for _, tt := range []struct {
		name  string
		admin bool
	}{{"granted", true}, {"revoked", false}, {"granted again", true}} {
		t.Run(tt.name, func(t *testing.T) {
			a := s.auth
			a.ControlPlaneAdmin = tt.admin
			if err := fleetstore.SetupAuth(ctx, root, s.keys, a); err != nil {
				t.Fatal(err)
			}
			cp := s.client(t, fleetstore.ControlPlaneUser, s.auth.ControlPlanePassword)
			_, err := cp.Put(ctx, "/fleet-b/sessions/x", "x")
			if tt.admin && err != nil {
				t.Fatalf("admin control plane writes outside its prefix: %v", err)
			}
			if !tt.admin {
				denied(t, "control plane without the root role writes outside its prefix", err)
			}
		})
	}
}
