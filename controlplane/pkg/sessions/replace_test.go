package sessions

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// lostRecord is a session the supervisor has marked lost on worker "lost".
func lostRecord(mutate func(*fleetv1.Session)) *fleetv1.Session {
	now := time.Now()
	s := &fleetv1.Session{
		Id: "sess_1", Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o", Labels: map[string]string{"k": "v"},
		State: fleetv1.SessionState_SESSION_STATE_PLACING, WorkerId: "lost", Gpu: 0, Slot: 1,
		CreatedAt: timestamppb.New(now.Add(-time.Minute)), MaxDurationSeconds: 3600,
		LostAt: timestamppb.New(now), MovedFrom: "lost", MoveReason: fleetstore.MoveReasonWorkerLost,
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func fastReplace() Options {
	o := quiet()
	o.ReplaceMinBackoff, o.ReplaceMaxBackoff = 10*time.Millisecond, 40*time.Millisecond
	return o
}

func TestReplace(t *testing.T) {
	tests := []struct {
		name   string
		record func(*fleetv1.Session)
		slots  map[string]uint32
		refuse []string
		// addAfter adds worker "late" with a slot after that long.
		addAfter time.Duration
		// deleteAfter ends the record (an API delete) after that long.
		deleteAfter time.Duration
		staleRev    bool
		// want
		state      fleetv1.SessionState
		worker     string
		reason     fleetv1.EndReason
		err        error
		minElapsed time.Duration
		maxElapsed time.Duration
	}{
		{name: "placed on a free worker", slots: map[string]uint32{"w2": 1},
			state: fleetv1.SessionState_SESSION_STATE_READY, worker: "w2"},
		{name: "refused by one, placed on the other", slots: map[string]uint32{"w2": 1, "w3": 1}, refuse: []string{"w2"},
			state: fleetv1.SessionState_SESSION_STATE_READY, worker: "w3"},
		{name: "no capacity: backoff, then worker_lost at the replace timeout",
			record: func(s *fleetv1.Session) { s.ReplaceTimeoutSeconds = 1 },
			state:  fleetv1.SessionState_SESSION_STATE_FAILED, reason: fleetv1.EndReason_END_REASON_WORKER_LOST,
			minElapsed: 900 * time.Millisecond, maxElapsed: 5 * time.Second},
		{name: "every worker refuses until the deadline", slots: map[string]uint32{"w2": 1}, refuse: []string{"w2"},
			record: func(s *fleetv1.Session) { s.ReplaceTimeoutSeconds = 1 },
			state:  fleetv1.SessionState_SESSION_STATE_FAILED, reason: fleetv1.EndReason_END_REASON_WORKER_LOST,
			minElapsed: 900 * time.Millisecond},
		{name: "max duration comes before the replace timeout",
			record: func(s *fleetv1.Session) {
				s.ReplaceTimeoutSeconds = 60
				s.CreatedAt = timestamppb.New(time.Now().Add(-59*time.Second - 500*time.Millisecond))
				s.MaxDurationSeconds = 60
			},
			state: fleetv1.SessionState_SESSION_STATE_FAILED, reason: fleetv1.EndReason_END_REASON_WORKER_LOST,
			maxElapsed: 5 * time.Second},
		{name: "max duration already over: failed without a start", slots: map[string]uint32{"w2": 1},
			record: func(s *fleetv1.Session) { s.CreatedAt = timestamppb.New(time.Now().Add(-2 * time.Hour)) },
			state:  fleetv1.SessionState_SESSION_STATE_FAILED, reason: fleetv1.EndReason_END_REASON_WORKER_LOST, maxElapsed: time.Second},
		{name: "capacity appears while waiting", addAfter: 300 * time.Millisecond,
			record: func(s *fleetv1.Session) { s.ReplaceTimeoutSeconds = 30 },
			state:  fleetv1.SessionState_SESSION_STATE_READY, worker: "late", minElapsed: 300 * time.Millisecond},
		{name: "starting record of a deposed leader: that worker is skipped", slots: map[string]uint32{"w2": 2, "w3": 1},
			record: func(s *fleetv1.Session) {
				s.State, s.WorkerId, s.Slot = fleetv1.SessionState_SESSION_STATE_STARTING, "w2", 0
			},
			state: fleetv1.SessionState_SESSION_STATE_READY, worker: "w3"},
		{name: "deleted while waiting for capacity", deleteAfter: 200 * time.Millisecond, err: ErrMovedOn,
			record: func(s *fleetv1.Session) { s.ReplaceTimeoutSeconds = 30 }},
		{name: "record changed since: nothing done", slots: map[string]uint32{"w2": 1}, staleRev: true, err: ErrMovedOn},
		{name: "a ready record is not the replacer's", slots: map[string]uint32{"w2": 1}, err: ErrMovedOn,
			record: func(s *fleetv1.Session) { s.State, s.LostAt = fleetv1.SessionState_SESSION_STATE_READY, nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(fastReplace())
			for _, id := range []string{"w2", "w3"} {
				if n, ok := tt.slots[id]; ok {
					fx.fleet.add(id, n)
				}
			}
			for _, id := range tt.refuse {
				fx.workers.refuse[id] = true
			}
			rec := lostRecord(tt.record)
			rev := fx.store.put(rec)
			if rec.GetState() == fleetv1.SessionState_SESSION_STATE_STARTING {
				fx.store.slots[slotID{rec.GetWorkerId(), rec.GetGpu(), rec.GetSlot()}] = rec.GetId()
			}
			if tt.staleRev {
				rev--
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tt.addAfter > 0 {
				timer := time.AfterFunc(tt.addAfter, func() { fx.fleet.add("late", 1) })
				defer timer.Stop()
			}
			if tt.deleteAfter > 0 {
				timer := time.AfterFunc(tt.deleteAfter, func() {
					cur, rev, _ := fx.store.Session(ctx, rec.GetId())
					if _, err := fx.store.EndSessionAt(ctx, cur, rev, fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, "api"); err != nil {
						t.Error(err)
					}
				})
				defer timer.Stop()
			}
			var replayed []*fleetv1.Session
			fx.m.replay = func(_ context.Context, sess *fleetv1.Session) error {
				replayed = append(replayed, sess)
				return nil
			}
			start := time.Now()
			got, err := fx.m.Replace(ctx, rec.GetId(), rev, fleetstore.MoveReasonWorkerLost)
			elapsed := time.Since(start)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if tt.deleteAfter > 0 {
				if got.GetState() != fleetv1.SessionState_SESSION_STATE_ENDED || elapsed > 10*time.Second {
					t.Errorf("after the delete Replace returned %v after %s", got, elapsed)
				}
				return
			}
			if tt.err != nil {
				if fx.store.count("reserve_move") != 0 {
					t.Errorf("%d reservations after %v", fx.store.count("reserve_move"), err)
				}
				return
			}
			if got.GetState() != tt.state || got.GetEndReason() != tt.reason {
				t.Fatalf("ended %s/%s, want %s/%s: %v", got.GetState(), got.GetEndReason(), tt.state, tt.reason, got)
			}
			if tt.minElapsed > 0 && elapsed < tt.minElapsed || tt.maxElapsed > 0 && elapsed > tt.maxElapsed {
				t.Errorf("took %s, want %s..%s", elapsed, tt.minElapsed, tt.maxElapsed)
			}
			stored, _, _ := fx.store.Session(ctx, rec.GetId())
			if stored.GetState() != tt.state {
				t.Errorf("stored record is %s", stored.GetState())
			}
			if tt.state == fleetv1.SessionState_SESSION_STATE_FAILED {
				if len(replayed) != 0 {
					t.Errorf("speech replayed for a failed session")
				}
				if len(fx.store.slots) != 0 {
					t.Errorf("a failed re-placement holds slots %v", fx.store.slots)
				}
				t.Logf("failed after %s: %s", elapsed.Round(time.Millisecond), got.GetEndMessage())
				return
			}
			if got.GetWorkerId() != tt.worker || got.GetMoves() != 1 || got.GetMovedFrom() != "lost" ||
				got.GetMoveReason() != fleetstore.MoveReasonWorkerLost || got.GetLostAt() != nil || got.GetPlacedAt() == nil {
				t.Errorf("moved record: %v", got)
			}
			if got.GetId() != rec.GetId() || got.GetLabels()["k"] != "v" || got.GetOwner() != "o" ||
				!got.GetCreatedAt().AsTime().Equal(rec.GetCreatedAt().AsTime()) || got.GetMaxDurationSeconds() != rec.GetMaxDurationSeconds() {
				t.Errorf("identity changed: %v", got)
			}
			if len(fx.store.slots) != 1 || fx.store.slots[slotID{got.GetWorkerId(), got.GetGpu(), got.GetSlot()}] != rec.GetId() {
				t.Errorf("slots after the move: %v", fx.store.slots)
			}
			// Queued speech is replayed to the new worker once it runs there.
			if len(replayed) != 1 || replayed[0].GetWorkerId() != tt.worker || replayed[0].GetState() != fleetv1.SessionState_SESSION_STATE_READY {
				t.Errorf("speech replays: %v", replayed)
			}
			start2 := fx.workers.lastStart()
			if start2 == nil || start2.GetReservationRevision() == 0 || start2.GetSession().GetWorkerId() != tt.worker {
				t.Fatalf("start request %v", start2)
			}
			// The new worker gets what is left of the max duration.
			if left := start2.GetSession().GetMaxDurationSeconds(); left > 3600-59 || left < 3600-70 {
				t.Errorf("max duration sent to the new worker: %d s, want about 3540", left)
			}
		})
	}
}

func TestReplacesOnLoss(t *testing.T) {
	for policy, want := range map[fleetv1.RestartPolicy]bool{
		fleetv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED:    true,
		fleetv1.RestartPolicy_RESTART_POLICY_ON_WORKER_LOST: true,
		fleetv1.RestartPolicy_RESTART_POLICY_NEVER:          false,
	} {
		if got := ReplacesOnLoss(&fleetv1.Session{RestartPolicy: policy}); got != want {
			t.Errorf("%s: %v, want %v", policy, got, want)
		}
	}
}

// TestReplaceWokenWhenASlotFrees: a re-placement waiting out a long backoff
// tries again as soon as it is told a slot freed.
func TestReplaceWokenWhenASlotFrees(t *testing.T) {
	o := quiet()
	o.ReplaceMinBackoff, o.ReplaceMaxBackoff = 20*time.Second, 20*time.Second
	fx := newFixture(o)
	fx.fleet.add("w2", 1)
	fx.store.put(&fleetv1.Session{Id: "other", State: fleetv1.SessionState_SESSION_STATE_READY, WorkerId: "w2"})
	fx.store.slots[slotID{"w2", 0, 0}] = "other"
	rec := lostRecord(nil)
	rev := fx.store.put(rec)
	type result struct {
		sess *fleetv1.Session
		err  error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		s, err := fx.m.Replace(context.Background(), rec.GetId(), rev, fleetstore.MoveReasonWorkerLost)
		done <- result{s, err}
	}()
	time.Sleep(300 * time.Millisecond) // the first round found no slot; it waits
	fx.store.mu.Lock()
	delete(fx.store.slots, slotID{"w2", 0, 0})
	fx.store.mu.Unlock()
	fx.m.CapacityChanged()
	select {
	case r := <-done:
		if r.err != nil || r.sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY || r.sess.GetWorkerId() != "w2" {
			t.Fatalf("Replace: %v, %v", r.sess, r.err)
		}
		t.Logf("placed %s after the start, the slot freed after 300 ms", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting re-placement was not woken")
	}
}
