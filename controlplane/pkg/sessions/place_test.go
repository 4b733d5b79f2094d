package sessions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

func quiet() Options { return Options{Log: slog.New(slog.DiscardHandler)} }

func TestCandidates(t *testing.T) {
	worker := func(id string, mutate func(*registry.WorkerView)) registry.WorkerView {
		v := registry.WorkerView{Worker: &fleetv1.Worker{Id: id, State: fleetv1.WorkerState_WORKER_STATE_ACTIVE,
			Avatars: []string{"alice"}, Voices: []string{"en"}, Gpus: []*fleetv1.GPU{{Index: 0, Slots: 2}, {Index: 1, Slots: 2}}},
			UsedPerGPU: map[uint32]int{1: 1}, Sessions: 1}
		if mutate != nil {
			mutate(&v)
		}
		return v
	}
	sess := &fleetv1.Session{Avatar: "alice", Voice: "en"}
	tests := []struct {
		name     string
		views    []registry.WorkerView
		sess     *fleetv1.Session
		refused  map[string]bool
		eligible []bool // per candidate, in order
		err      error
	}{
		{name: "active worker: each GPU", views: []registry.WorkerView{worker("w1", nil)}, sess: sess, eligible: []bool{true, true}},
		{name: "admin drained", views: []registry.WorkerView{worker("w1", func(v *registry.WorkerView) { v.Drained = true })}, sess: sess, eligible: []bool{false, false}},
		{name: "draining itself", views: []registry.WorkerView{worker("w1", func(v *registry.WorkerView) {
			v.Worker.State = fleetv1.WorkerState_WORKER_STATE_DRAINING
		})}, sess: sess, eligible: []bool{false, false}},
		{name: "down", views: []registry.WorkerView{worker("w1", func(v *registry.WorkerView) { v.Down = true })}, sess: sess, eligible: []bool{false, false}},
		{name: "refused this session", views: []registry.WorkerView{worker("w1", nil), worker("w2", nil)}, sess: sess,
			refused: map[string]bool{"w1": true}, eligible: []bool{false, false, true, true}},
		{name: "serves not the voice", views: []registry.WorkerView{worker("w1", nil), worker("w2", func(v *registry.WorkerView) { v.Worker.Voices = []string{"de"} })},
			sess: sess, eligible: []bool{true, true, false, false}},
		{name: "unknown avatar", views: []registry.WorkerView{worker("w1", nil)}, sess: &fleetv1.Session{Avatar: "bob", Voice: "en"}, err: ErrUnknownAvatar},
		{name: "unknown voice", views: []registry.WorkerView{worker("w1", nil)}, sess: &fleetv1.Session{Avatar: "alice", Voice: "fr"}, err: ErrUnknownVoice},
		{name: "no workers: no error, no candidates", sess: sess},
		{name: "a worker that lists nothing serves the defaults", views: []registry.WorkerView{worker("w1", func(v *registry.WorkerView) {
			v.Worker.Avatars, v.Worker.Voices = nil, nil
		})}, sess: &fleetv1.Session{Avatar: DefaultAvatar, Voice: DefaultVoice}, eligible: []bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands, err := candidates(tt.views, tt.sess, tt.refused)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if len(cands) != len(tt.eligible) {
				t.Fatalf("%d candidates, want %d", len(cands), len(tt.eligible))
			}
			for i, c := range cands {
				if c.Eligible != tt.eligible[i] {
					t.Errorf("candidate %d (%s gpu %d): eligible %v, want %v", i, c.WorkerID, c.GPU, c.Eligible, tt.eligible[i])
				}
				if c.GPU == 1 && (c.Used != 1 || c.WorkerSlots != 4 || c.WorkerUsed != 1) {
					t.Errorf("candidate %d use: %+v", i, c)
				}
			}
		})
	}
}

// Placement tries further slots when a reservation loses a race and
// further workers when one refuses the start (undoing its reservation).
func TestPlaceRetries(t *testing.T) {
	tests := []struct {
		name       string
		slots      map[string]uint32 // worker → slots
		refuse     []string
		loseNext   int
		wantWorker string
		wantErr    error
		unreserves int
	}{
		{name: "first try", slots: map[string]uint32{"w1": 1}, wantWorker: "w1"},
		{name: "reservation lost twice, then won", slots: map[string]uint32{"w1": 4}, loseNext: 2, wantWorker: "w1"},
		{name: "worker refuses: undone, placed on the other", slots: map[string]uint32{"w1": 2, "w2": 2}, refuse: []string{"w1"}, wantWorker: "w2", unreserves: -1},
		{name: "the only free worker refuses", slots: map[string]uint32{"w1": 1}, refuse: []string{"w1"}, wantErr: ErrNoCapacity, unreserves: 1},
		{name: "every worker refuses", slots: map[string]uint32{"w1": 1, "w2": 1}, refuse: []string{"w1", "w2"}, wantErr: ErrNoCapacity, unreserves: 2},
		{name: "every race lost", slots: map[string]uint32{"w1": 2}, loseNext: 2, wantErr: ErrNoCapacity},
		{name: "no worker", wantErr: ErrNoCapacity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(quiet())
			for _, id := range []string{"w1", "w2"} {
				if n, ok := tt.slots[id]; ok {
					fx.fleet.add(id, n)
				}
			}
			for _, id := range tt.refuse {
				fx.workers.refuse[id] = true
			}
			fx.store.loseNext = tt.loseNext
			sess, err := fx.m.Create(context.Background(), CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if n := fx.store.count("unreserve"); n != tt.unreserves {
					t.Errorf("%d unreserves, want %d", n, tt.unreserves)
				}
				if len(fx.store.slots) != 0 || len(fx.store.records) != 0 {
					t.Errorf("a failed create left slots %v records %d", fx.store.slots, len(fx.store.records))
				}
				return
			}
			if sess.GetWorkerId() != tt.wantWorker || sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY || sess.GetPlacedAt() == nil {
				t.Fatalf("placed %v", sess)
			}
			// Each refused start was undone (whether ranking tried w1 first or not).
			if tt.unreserves < 0 && fx.store.count("unreserve") != fx.workers.startsOn("w1") {
				t.Errorf("refusing worker: %d unreserves, %d starts", fx.store.count("unreserve"), fx.workers.startsOn("w1"))
			}
			rec, _, _ := fx.store.Session(context.Background(), sess.GetId())
			if rec.GetState() != fleetv1.SessionState_SESSION_STATE_READY || rec.GetWorkerId() != tt.wantWorker {
				t.Errorf("record %v", rec)
			}
		})
	}
}

// TestCreateAnswersBeforeReadyMark: a create returns ready once the worker
// runs the session, while its ready mark is still queued (the record says
// starting); the mark then lands, or is dropped if the record moved on.
func TestCreateAnswersBeforeReadyMark(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("record moved on: %v", moved), func(t *testing.T) {
			fx := newFixture(quiet())
			fx.fleet.add("w1", 2)
			fx.store.holdMarks = true
			sess, err := fx.m.Create(context.Background(), CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"})
			if err != nil {
				t.Fatal(err)
			}
			if sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY || sess.GetPlacedAt() == nil || fx.workers.startsOn("w1") != 1 {
				t.Fatalf("create answered %v after %d starts", sess, fx.workers.startsOn("w1"))
			}
			rec, rev, _ := fx.store.Session(context.Background(), sess.GetId())
			if rec.GetState() != fleetv1.SessionState_SESSION_STATE_STARTING {
				t.Fatalf("record before the mark: %s, want starting", rec.GetState())
			}
			want := fleetv1.SessionState_SESSION_STATE_READY
			if moved { // e.g. deleted right after the 201
				rec.State, want = fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.SessionState_SESSION_STATE_ENDED
				if _, err := fx.store.UpdateSession(context.Background(), rec, rev); err != nil {
					t.Fatal(err)
				}
			}
			fx.store.releaseMarks()
			if rec, _, _ = fx.store.Session(context.Background(), sess.GetId()); rec.GetState() != want {
				t.Errorf("record after the mark: %s, want %s", rec.GetState(), want)
			}
		})
	}
}
