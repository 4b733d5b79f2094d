package fleetstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// A session's worker is lost (its lease revoked): the session goes to
// placing, takes a slot elsewhere by ReserveMove at its revision, goes back
// by Unplace, and finally fails; every step refuses a stale revision, and the
// owner's live mark stays until the end.
func TestReplaceStepsAreGuarded(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease1, rev1 := registerWorker(t, s, cli, "w1")
	lease2, rev2 := registerWorker(t, s, cli, "w2")
	sess := &fleetv1.Session{Id: "sess_a", Owner: "owner1", State: fleetv1.SessionState_SESSION_STATE_READY}
	if _, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease1, WorkerRevision: rev1, GPU: 0, Slot: 1}, sess); err != nil || !ok {
		t.Fatalf("reserve: ok=%v err=%v", ok, err)
	}
	held, err := s.SessionWithSlot(ctx, "sess_a")
	if err != nil || !held.SlotHeld {
		t.Fatalf("slot of a reserved session: %+v, %v", held, err)
	}
	if _, _, err := s.MarkLost(ctx, held, time.Now()); !errors.Is(err, fleetstore.ErrSlotHeld) {
		t.Fatalf("mark lost while the slot holds it: %v, want ErrSlotHeld", err)
	}
	if _, err := cli.Revoke(ctx, lease1); err != nil {
		t.Fatal(err)
	}
	lost, err := s.SessionWithSlot(ctx, "sess_a")
	if err != nil || lost.SlotHeld || lost.SlotRevision != 0 {
		t.Fatalf("slot after the worker's lease went: %+v, %v", lost, err)
	}
	placing, rev, err := s.MarkLost(ctx, lost, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if placing.GetState() != fleetv1.SessionState_SESSION_STATE_PLACING || placing.GetMovedFrom() != "w1" ||
		placing.GetMoveReason() != fleetstore.MoveReasonWorkerLost || placing.GetLostAt() == nil {
		t.Fatalf("placing record: %v", placing)
	}
	if _, _, err := s.MarkLost(ctx, lost, time.Now()); !errors.Is(err, fleetstore.ErrConflict) {
		t.Fatalf("second mark lost of the same sighting: %v, want ErrConflict", err)
	}
	if _, err := s.FailLost(ctx, lost, "stale"); !errors.Is(err, fleetstore.ErrConflict) {
		t.Fatalf("fail lost of a stale sighting: %v, want ErrConflict", err)
	}

	starting := proto.Clone(placing).(*fleetv1.Session)
	starting.State = fleetv1.SessionState_SESSION_STATE_STARTING
	r2 := fleetstore.Reservation{Worker: "w2", WorkerLease: lease2, WorkerRevision: rev2, GPU: 0, Slot: 0}
	if _, ok, err := s.ReserveMove(ctx, r2, proto.Clone(starting).(*fleetv1.Session), rev-1, fleetstore.SlotOf(placing)); err != nil || ok {
		t.Fatalf("reserve move at a stale revision: ok=%v err=%v", ok, err)
	}
	rev, ok, err := s.ReserveMove(ctx, r2, starting, rev, fleetstore.SlotOf(placing))
	if err != nil || !ok {
		t.Fatalf("reserve move: ok=%v err=%v", ok, err)
	}
	moved, err := s.SessionWithSlot(ctx, "sess_a")
	if err != nil || !moved.SlotHeld || moved.Session.GetWorkerId() != "w2" || moved.Revision != rev {
		t.Fatalf("after reserve move: %+v, %v", moved, err)
	}
	if n, err := s.LiveSessions(ctx, "owner1"); err != nil || n != 1 {
		t.Fatalf("live sessions of the owner after a move: %d, %v; want 1", n, err)
	}

	back := proto.Clone(moved.Session).(*fleetv1.Session)
	back.State = fleetv1.SessionState_SESSION_STATE_PLACING
	if _, err := s.Unplace(ctx, back, rev-1, fleetstore.SlotOf(moved.Session)); !errors.Is(err, fleetstore.ErrConflict) {
		t.Fatalf("unplace at a stale revision: %v", err)
	}
	if rev, err = s.Unplace(ctx, back, rev, fleetstore.SlotOf(moved.Session)); err != nil {
		t.Fatal(err)
	}
	if free, err := s.SessionWithSlot(ctx, "sess_a"); err != nil || free.SlotHeld || free.SlotRevision != 0 {
		t.Fatalf("w2's slot after unplace: %+v, %v", free, err)
	}

	if _, err := s.EndSessionAt(ctx, back, rev-1, fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_WORKER_LOST, "x"); !errors.Is(err, fleetstore.ErrConflict) {
		t.Fatalf("end at a stale revision: %v", err)
	}
	ended, err := s.EndSessionAt(ctx, back, rev, fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_WORKER_LOST, "no capacity")
	if err != nil || ended.GetEndReason() != fleetv1.EndReason_END_REASON_WORKER_LOST {
		t.Fatalf("end: %v, %v", ended, err)
	}
	if n, err := s.LiveSessions(ctx, "owner1"); err != nil || n != 0 {
		t.Fatalf("live sessions of the owner after the end: %d, %v; want 0", n, err)
	}
}

// The bug at the store level: a slot deletion seen for a first
// placement attempt must not end the second attempt of the same session id
// on another worker.
func TestFailLostIgnoresAReusedSessionID(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease1, rev1 := registerWorker(t, s, cli, "w1")
	lease2, rev2 := registerWorker(t, s, cli, "w2")
	first := &fleetv1.Session{Id: "sess_b", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	rev, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease1, WorkerRevision: rev1}, first)
	if err != nil || !ok {
		t.Fatalf("reserve on w1: %v %v", ok, err)
	}
	if _, err := cli.Revoke(ctx, lease1); err != nil { // the worker dies: its slot goes
		t.Fatal(err)
	}
	seen, err := s.SessionWithSlot(ctx, "sess_b") // what the reaper read, late
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unreserve(ctx, first, rev); err != nil {
		t.Fatal(err)
	}
	second := &fleetv1.Session{Id: "sess_b", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	if _, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w2", WorkerLease: lease2, WorkerRevision: rev2}, second); err != nil || !ok {
		t.Fatalf("reserve on w2: %v %v", ok, err)
	}
	if _, err := s.FailLost(ctx, seen, "w1 lost"); !errors.Is(err, fleetstore.ErrConflict) {
		t.Fatalf("fail lost with the first attempt's sighting: %v, want ErrConflict", err)
	}
	if _, _, err := s.MarkLost(ctx, seen, time.Now()); !errors.Is(err, fleetstore.ErrConflict) {
		t.Fatalf("mark lost with the first attempt's sighting: %v, want ErrConflict", err)
	}
	now, err := s.SessionWithSlot(ctx, "sess_b")
	if err != nil || !now.SlotHeld || now.Session.GetWorkerId() != "w2" || fleetstore.Terminal(now.Session.GetState()) {
		t.Fatalf("second attempt after the stale sighting: %+v, %v", now, err)
	}
}

// TestLostWorkerFailsItsRecordingsInProgress: marking a session lost, or
// failing it lost, fails the recordings its lost worker was still writing
// (nobody can finish or stop them any more); finished ones, and those of
// another worker, stay as they are.
func TestLostWorkerFailsItsRecordingsInProgress(t *testing.T) {
	for _, fail := range []bool{false, true} {
		s, cli := startStore(t)
		ctx := context.Background()
		lease, rev := registerWorker(t, s, cli, "w1")
		sess := &fleetv1.Session{Id: "sess_r", State: fleetv1.SessionState_SESSION_STATE_READY}
		if _, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev}, sess); err != nil || !ok {
			t.Fatalf("reserve: ok=%v err=%v", ok, err)
		}
		for _, r := range []*fleetv1.Recording{
			{Id: "rec_live", State: fleetstore.RecordingInProgress, WorkerId: "w1"},
			{Id: "rec_done", State: fleetstore.RecordingStopped, WorkerId: "w1", Bytes: 10},
			{Id: "rec_other", State: fleetstore.RecordingInProgress, WorkerId: "w0"},
		} {
			if _, err := s.PutRecording(ctx, "sess_r", r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cli.Revoke(ctx, lease); err != nil {
			t.Fatal(err)
		}
		lost, err := s.SessionWithSlot(ctx, "sess_r")
		if err != nil {
			t.Fatal(err)
		}
		var after *fleetv1.Session
		if fail {
			after, err = s.FailLost(ctx, lost, "lost")
		} else {
			after, _, err = s.MarkLost(ctx, lost, time.Now())
		}
		if err != nil {
			t.Fatal(err)
		}
		stored, _, err := s.Session(ctx, "sess_r")
		if err != nil {
			t.Fatal(err)
		}
		for _, got := range []*fleetv1.Session{after, stored} {
			want := map[string]string{"rec_live": fleetstore.RecordingFailed, "rec_done": fleetstore.RecordingStopped, "rec_other": fleetstore.RecordingInProgress}
			for id, st := range want {
				r, ok := fleetstore.Recording(got, id)
				if !ok || r.GetState() != st {
					t.Errorf("fail=%v: recording %s is %v, want %s", fail, id, r, st)
				}
			}
			if r, _ := fleetstore.Recording(got, "rec_live"); r.GetStoppedAt() == nil || r.GetError() == "" {
				t.Errorf("fail=%v: the failed recording has no end or reason: %v", fail, r)
			}
		}
	}
}
