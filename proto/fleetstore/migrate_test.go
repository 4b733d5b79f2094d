package fleetstore_test

import (
	"context"
	"errors"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// readySession reserves slot 0 of w1 for a session and marks it ready.
func readySession(t *testing.T, s *fleetstore.Store, lease clientv3.LeaseID, rev int64, id string) (*fleetv1.Session, int64) {
	t.Helper()
	ctx := context.Background()
	sess := &fleetv1.Session{Id: id, Owner: "o", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	r, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev}, sess)
	if err != nil || !ok {
		t.Fatalf("reserve: ok=%v err=%v", ok, err)
	}
	sess.State = fleetv1.SessionState_SESSION_STATE_READY
	r, err = s.UpdateSession(ctx, sess, r)
	if err != nil {
		t.Fatal(err)
	}
	return sess, r
}

func slotHolder(t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func TestMigrationBeginFinish(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	l1, r1 := registerWorker(t, s, cli, "w1")
	l2, r2 := registerWorker(t, s, cli, "w2")
	sess, rev := readySession(t, s, l1, r1, "s1")
	src, dst := s.Keys().Slot("w1", 0, 0), s.Keys().Slot("w2", 0, 1)

	target := fleetstore.Reservation{Worker: "w2", WorkerLease: l2, WorkerRevision: r2, GPU: 0, Slot: 1}
	if _, _, ok, err := s.BeginMigration(ctx, sess, rev-1, target, fleetstore.MoveReasonDrain); err != nil || ok {
		t.Fatalf("begin at a stale revision: ok=%v err=%v, want refused", ok, err)
	}
	moved, mrev, ok, err := s.BeginMigration(ctx, sess, rev, target, fleetstore.MoveReasonDrain)
	if err != nil || !ok {
		t.Fatalf("begin: ok=%v err=%v", ok, err)
	}
	got, grev, err := s.Session(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if grev != mrev || got.GetWorkerId() != "w2" || got.GetSlot() != 1 || got.GetMoves() != 1 ||
		got.GetMovedFrom() != "w1" || got.GetMoveReason() != "drain" || got.GetPlacedAt() == nil ||
		got.GetMigratingFrom().GetWorkerId() != "w1" || got.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("record after begin: %v", got)
	}
	if slotHolder(t, cli, src) != "s1" || slotHolder(t, cli, dst) != "s1" {
		t.Fatal("both slots must hold the session while it migrates")
	}
	if _, _, err := s.FinishMigration(ctx, moved, mrev-1); !errors.Is(err, fleetstore.ErrConflict) {
		t.Fatalf("finish at a stale revision: %v, want conflict", err)
	}
	done, _, err := s.FinishMigration(ctx, moved, mrev)
	if err != nil {
		t.Fatal(err)
	}
	if done.GetMigratingFrom() != nil {
		t.Fatal("migrating_from kept after finish")
	}
	if slotHolder(t, cli, src) != "" || slotHolder(t, cli, dst) != "s1" {
		t.Fatal("after finish only the target slot holds the session")
	}
}

func TestMigrationRefusedTargets(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, s *fleetstore.Store, cli *clientv3.Client)
	}{
		{"slot taken", func(t *testing.T, _ *fleetstore.Store, cli *clientv3.Client) {
			if _, err := cli.Put(context.Background(), "/test/fleet/slots/w2/0/1", "other"); err != nil {
				t.Fatal(err)
			}
		}},
		{"target drained", func(t *testing.T, s *fleetstore.Store, _ *clientv3.Client) {
			if err := s.SetDrainMark(context.Background(), "w2", false); err != nil {
				t.Fatal(err)
			}
		}},
		{"source slot gone", func(t *testing.T, _ *fleetstore.Store, cli *clientv3.Client) {
			if _, err := cli.Delete(context.Background(), "/test/fleet/slots/w1/0/0"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, cli := startStore(t)
			l1, r1 := registerWorker(t, s, cli, "w1")
			l2, r2 := registerWorker(t, s, cli, "w2")
			sess, rev := readySession(t, s, l1, r1, "s1")
			tt.setup(t, s, cli)
			_, _, ok, err := s.BeginMigration(context.Background(), sess, rev, fleetstore.Reservation{Worker: "w2", WorkerLease: l2, WorkerRevision: r2, GPU: 0, Slot: 1}, "drain")
			if err != nil || ok {
				t.Fatalf("ok=%v err=%v, want refused", ok, err)
			}
		})
	}
}

func TestMigrationAbortAndEndFreeBothSlots(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	l1, r1 := registerWorker(t, s, cli, "w1")
	l2, r2 := registerWorker(t, s, cli, "w2")
	sess, rev := readySession(t, s, l1, r1, "s1")
	target := fleetstore.Reservation{Worker: "w2", WorkerLease: l2, WorkerRevision: r2, GPU: 0, Slot: 1}
	moved, mrev, ok, err := s.BeginMigration(ctx, sess, rev, target, "drain")
	if err != nil || !ok {
		t.Fatalf("begin: ok=%v err=%v", ok, err)
	}
	arev, err := s.AbortMigration(ctx, sess, moved, mrev)
	if err != nil {
		t.Fatal(err)
	}
	got, grev, _ := s.Session(ctx, "s1")
	if grev != arev || got.GetWorkerId() != "w1" || got.GetMigratingFrom() != nil || got.GetMoves() != 0 {
		t.Fatalf("record after abort: %v", got)
	}
	if slotHolder(t, cli, s.Keys().Slot("w2", 0, 1)) != "" || slotHolder(t, cli, s.Keys().Slot("w1", 0, 0)) != "s1" {
		t.Fatal("abort must free the target slot and keep the source")
	}

	// Ended while migrating: both slots go.
	if _, _, ok, err := s.BeginMigration(ctx, got, grev, target, "drain"); err != nil || !ok {
		t.Fatalf("begin again: ok=%v err=%v", ok, err)
	}
	if _, ended, err := s.EndSession(ctx, "s1", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil || !ended {
		t.Fatalf("end: ended=%v err=%v", ended, err)
	}
	resp, err := cli.Get(ctx, s.Keys().Slots(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("%d slot keys left after the end of a migrating session", len(resp.Kvs))
	}
}

func TestWorkerSessionIDs(t *testing.T) {
	s, cli := startStore(t)
	l1, r1 := registerWorker(t, s, cli, "w1")
	registerWorker(t, s, cli, "w2")
	readySession(t, s, l1, r1, "s1")
	ids, err := s.WorkerSessionIDs(context.Background(), "w1")
	if err != nil || len(ids) != 1 || ids[0] != "s1" {
		t.Fatalf("sessions of w1 = %v, %v", ids, err)
	}
	if ids, err := s.WorkerSessionIDs(context.Background(), "w2"); err != nil || len(ids) != 0 {
		t.Fatalf("sessions of w2 = %v, %v", ids, err)
	}
}

// TestEndSessionOnWorker: a worker ends only a session whose record names
// it; from a session migrating off it, it lets go of its slot instead.
func TestEndSessionOnWorker(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	l1, r1 := registerWorker(t, s, cli, "w1")
	l2, r2 := registerWorker(t, s, cli, "w2")
	sess, rev := readySession(t, s, l1, r1, "s1")
	if _, _, ok, err := s.BeginMigration(ctx, sess, rev, fleetstore.Reservation{Worker: "w2", WorkerLease: l2, WorkerRevision: r2, GPU: 0, Slot: 1}, "drain"); err != nil || !ok {
		t.Fatalf("begin: ok=%v err=%v", ok, err)
	}
	ended := fleetv1.SessionState_SESSION_STATE_ENDED
	// The source ends its copy mid-migration: the target serves on.
	if _, ok, err := s.EndSessionOn(ctx, "w1", "s1", ended, fleetv1.EndReason_END_REASON_DRAINED, ""); err != nil || ok {
		t.Fatalf("source's end: ended=%v err=%v, want no end", ok, err)
	}
	got, _, _ := s.Session(ctx, "s1")
	if got.GetState() != fleetv1.SessionState_SESSION_STATE_READY || got.GetWorkerId() != "w2" || got.GetMigratingFrom() != nil {
		t.Fatalf("record after the source let go: %v", got)
	}
	if slotHolder(t, cli, s.Keys().Slot("w1", 0, 0)) != "" || slotHolder(t, cli, s.Keys().Slot("w2", 0, 1)) != "s1" {
		t.Fatal("the source's slot must go and the target's stay")
	}
	// Now it runs on w2 alone: w1 cannot end it, w2 can.
	if _, ok, err := s.EndSessionOn(ctx, "w1", "s1", ended, fleetv1.EndReason_END_REASON_IDLE_TIMEOUT, ""); err != nil || ok {
		t.Fatalf("a former worker's end: ended=%v err=%v, want no end", ok, err)
	}
	if got, ok, err := s.EndSessionOn(ctx, "w2", "s1", ended, fleetv1.EndReason_END_REASON_IDLE_TIMEOUT, ""); err != nil || !ok ||
		got.GetEndReason() != fleetv1.EndReason_END_REASON_IDLE_TIMEOUT {
		t.Fatalf("its worker's end: %v ended=%v err=%v", got, ok, err)
	}
	if slotHolder(t, cli, s.Keys().Slot("w2", 0, 1)) != "" {
		t.Fatal("the end must free the slot")
	}
}
