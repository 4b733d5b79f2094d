package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
)

// TestDrainMigrateUndoesRefusedStart: when the chosen target refuses the
// start, the migration is undone (record back on the source, the target's
// slot freed) and the session moves to the next worker instead.
func TestDrainMigrateUndoesRefusedStart(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{
		{ID: "src", SlotsPerGPU: 1},
		{ID: "bad", SlotsPerGPU: 4}, // the most free slots: tried first
		{ID: "good", SlotsPerGPU: 2},
	}})
	for _, w := range []string{"bad", "good"} {
		f.MustDo(0, "POST", "/v1/workers/"+w+"/drain", testfleet.AdminKey, nil)
	}
	f.Eventually(10*time.Second, "the replica sees bad and good drained", func() bool {
		b, _ := f.Replicas[0].Registry().Worker("bad")
		g, _ := f.Replicas[0].Registry().Worker("good")
		return b.Drained && g.Drained
	})
	r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
	var s apiv1.Session
	r.JSON(t, &s)
	if r.Status != 201 || s.WorkerID != "src" {
		t.Fatalf("create: %d on %q", r.Status, s.WorkerID)
	}
	for _, w := range []string{"bad", "good"} {
		f.MustDo(0, "POST", "/v1/workers/"+w+"/undrain", testfleet.AdminKey, nil)
	}
	// bad's runtime holds its first slot behind etcd's back, so it refuses
	// the migrated session's start there.
	holder := f.Worker("bad").Agent.Runtime().(*runtimetest.Holder)
	if err := holder.Start(context.Background(), &fleetv1.Session{Id: "squatter", WorkerId: "bad", Gpu: 0, Slot: 0}); err != nil {
		t.Fatal(err)
	}

	before, err := f.Client.Get(context.Background(), f.Store.Keys().Worker("bad"))
	if err != nil {
		t.Fatal(err)
	}
	if r := f.MustDo(0, "POST", "/v1/workers/src/drain", testfleet.AdminKey, apiv1.DrainRequest{Migrate: true}); r.Status != 202 {
		t.Fatalf("drain --migrate: %d %s", r.Status, r.Body)
	}
	var last string
	f.Eventually(30*time.Second, "the session moved to good", func() bool {
		rec, _, err := f.Store.Session(context.Background(), s.ID)
		if err != nil {
			return false
		}
		perGPU, _, _ := f.SlotKeys(context.Background())
		last = fmt.Sprintf("record on %s (moves %d, migrating from %v), slots %v", rec.GetWorkerId(), rec.GetMoves(), rec.GetMigratingFrom(), perGPU)
		return rec.GetState() == fleetv1.SessionState_SESSION_STATE_READY && rec.GetWorkerId() == "good" &&
			rec.GetMoves() == 1 && rec.GetMigratingFrom() == nil &&
			len(perGPU["src"]) == 0 && len(perGPU["bad"]) == 0 && perGPU["good"][0] == 1
	})
	t.Logf("settled: %s", last)
	// The history of bad's slots: the session was reserved there, then
	// released by the undo.
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var history []string
	wch := f.Client.Watch(wctx, f.Store.Keys().WorkerSlots("bad"), clientv3.WithPrefix(), clientv3.WithPrevKV(),
		clientv3.WithRev(before.Header.Revision+1))
	for len(history) < 2 {
		resp, ok := <-wch
		if !ok {
			t.Fatalf("history of bad's slots so far: %v", history)
		}
		for _, ev := range resp.Events {
			switch {
			case ev.Type == mvccpb.PUT && string(ev.Kv.Value) == s.ID:
				history = append(history, "reserved")
			case ev.Type == mvccpb.DELETE && ev.PrevKv != nil && string(ev.PrevKv.Value) == s.ID:
				history = append(history, "released")
			}
		}
	}
	if history[0] != "reserved" || history[1] != "released" {
		t.Fatalf("bad's slot history %v, want reserved then released", history)
	}
	if got := f.Worker("good").Agent.Runtime().Sessions(); len(got) != 1 || got[0] != s.ID {
		t.Fatalf("good runs %v, want [%s]", got, s.ID)
	}
}

// TestDrainMigrateResumesHalfDoneMove: a migration a former leader began
// but never started on the target (the record names the target, both slots
// held) is undone by the next migrator round, which then moves the session
// for real.
func TestDrainMigrateResumesHalfDoneMove(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{
		{ID: "src", SlotsPerGPU: 1},
		{ID: "dst", SlotsPerGPU: 2},
	}})
	f.MustDo(0, "POST", "/v1/workers/dst/drain", testfleet.AdminKey, nil)
	f.Eventually(10*time.Second, "the replica sees dst drained", func() bool {
		v, _ := f.Replicas[0].Registry().Worker("dst")
		return v.Drained
	})
	r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
	var s apiv1.Session
	r.JSON(t, &s)
	if r.Status != 201 || s.WorkerID != "src" {
		t.Fatalf("create: %d on %q", r.Status, s.WorkerID)
	}
	f.MustDo(0, "POST", "/v1/workers/dst/undrain", testfleet.AdminKey, nil)
	ctx := context.Background()
	var dst registry.WorkerView
	f.Eventually(10*time.Second, "the replica sees dst open", func() bool {
		v, ok := f.Replicas[0].Registry().Worker("dst")
		dst = v
		return ok && !v.Drained
	})
	// The half-done move: begun on dst slot 1, never started there.
	rec, rev, err := f.Store.Session(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := f.Store.BeginMigration(ctx, rec, rev, fleetstore.Reservation{
		Worker: "dst", WorkerLease: dst.Lease, WorkerRevision: dst.Revision, GPU: 0, Slot: 1,
	}, fleetstore.MoveReasonDrain); err != nil || !ok {
		t.Fatalf("begin: ok=%v err=%v", ok, err)
	}

	if r := f.MustDo(0, "POST", "/v1/workers/src/drain", testfleet.AdminKey, apiv1.DrainRequest{Migrate: true}); r.Status != 202 {
		t.Fatalf("drain --migrate: %d %s", r.Status, r.Body)
	}
	f.Eventually(30*time.Second, "the session runs on dst, src empty", func() bool {
		rec, _, err := f.Store.Session(ctx, s.ID)
		perGPU, _, _ := f.SlotKeys(ctx)
		return err == nil && rec.GetState() == fleetv1.SessionState_SESSION_STATE_READY && rec.GetWorkerId() == "dst" &&
			rec.GetMigratingFrom() == nil && rec.GetMoves() == 1 && len(perGPU["src"]) == 0 && perGPU["dst"][0] == 1 &&
			len(f.Worker("dst").Agent.Runtime().Sessions()) == 1
	})
}
