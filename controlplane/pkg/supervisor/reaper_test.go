package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"google.golang.org/grpc"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// memStore is the reaper's store in memory: records with revisions, slot
// keys, and a list-and-watch fed by the test.
type memStore struct {
	keys fleetstore.Keys

	mu      sync.Mutex
	rev     int64
	records map[string]*fleetv1.Session
	revs    map[string]int64
	slots   map[string]string
	slotRev map[string]int64
	calls   []string
	events  chan []fleetstore.Event
	listed  chan struct{} // closed after the first listing was handled
}

func newMemStore() *memStore {
	return &memStore{keys: fleetstore.NewKeys(""), records: map[string]*fleetv1.Session{}, revs: map[string]int64{},
		slots: map[string]string{}, slotRev: map[string]int64{}, events: make(chan []fleetstore.Event, 16),
		listed: make(chan struct{})}
}

func (s *memStore) Keys() fleetstore.Keys { return s.keys }

func (s *memStore) put(sess *fleetv1.Session, slotHeld bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	s.records[sess.GetId()], s.revs[sess.GetId()] = proto.Clone(sess).(*fleetv1.Session), s.rev
	if slotHeld {
		k := s.keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())
		s.slots[k], s.slotRev[k] = sess.GetId(), s.rev
	}
}

func (s *memStore) record(id string) (*fleetv1.Session, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proto.Clone(s.records[id]).(*fleetv1.Session), append([]string(nil), s.calls...)
}

func (s *memStore) ListWatch(ctx context.Context, _ fleetstore.ListWatchOptions, h fleetstore.Handler) error {
	s.mu.Lock()
	var kvs []fleetstore.KV
	for id, sess := range s.records {
		b, _ := proto.Marshal(sess)
		kvs = append(kvs, fleetstore.KV{Key: s.keys.Session(id), Value: b, ModRevision: s.revs[id]})
	}
	for k, v := range s.slots {
		kvs = append(kvs, fleetstore.KV{Key: k, Value: []byte(v), ModRevision: s.slotRev[k]})
	}
	rev := s.rev
	s.mu.Unlock()
	h.Replace(ctx, kvs, rev)
	close(s.listed)
	for {
		select {
		case <-ctx.Done():
			return nil
		case evs := <-s.events:
			h.Apply(ctx, evs, rev)
		}
	}
}

func (s *memStore) SessionWithSlot(_ context.Context, id string) (fleetstore.SessionSlot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.records[id]
	if !ok {
		return fleetstore.SessionSlot{}, fleetstore.ErrNotFound
	}
	k := s.keys.Slot(sess.GetWorkerId(), sess.GetGpu(), sess.GetSlot())
	return fleetstore.SessionSlot{Session: proto.Clone(sess).(*fleetv1.Session), Revision: s.revs[id],
		SlotHeld: s.slots[k] == id, SlotRevision: s.slotRev[k]}, nil
}

func (s *memStore) guard(ss fleetstore.SessionSlot) error {
	k := s.keys.Slot(ss.Session.GetWorkerId(), ss.Session.GetGpu(), ss.Session.GetSlot())
	if s.revs[ss.Session.GetId()] != ss.Revision || s.slotRev[k] != ss.SlotRevision {
		return fleetstore.ErrConflict
	}
	return nil
}

func (s *memStore) MarkLost(_ context.Context, ss fleetstore.SessionSlot, now time.Time) (*fleetv1.Session, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "mark_lost")
	if err := s.guard(ss); err != nil {
		return nil, 0, err
	}
	sess := proto.Clone(ss.Session).(*fleetv1.Session)
	sess.State, sess.LostAt, sess.MovedFrom = fleetv1.SessionState_SESSION_STATE_PLACING, timestamppb.New(now), sess.GetWorkerId()
	s.rev++
	s.records[sess.GetId()], s.revs[sess.GetId()] = sess, s.rev
	return sess, s.rev, nil
}

func (s *memStore) FailLost(_ context.Context, ss fleetstore.SessionSlot, msg string) (*fleetv1.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "fail_lost")
	if err := s.guard(ss); err != nil {
		return nil, err
	}
	sess := proto.Clone(ss.Session).(*fleetv1.Session)
	sess.State, sess.EndReason, sess.EndMessage = fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_WORKER_LOST, msg
	s.rev++
	s.records[sess.GetId()], s.revs[sess.GetId()] = sess, s.rev
	return sess, nil
}

func (s *memStore) EndSessionAt(_ context.Context, sess *fleetv1.Session, rev int64, state fleetv1.SessionState, reason fleetv1.EndReason, msg string) (*fleetv1.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "end:"+reason.String())
	if s.revs[sess.GetId()] != rev {
		return nil, fleetstore.ErrConflict
	}
	ended := proto.Clone(sess).(*fleetv1.Session)
	ended.State, ended.EndReason, ended.EndMessage = state, reason, msg
	s.rev++
	s.records[sess.GetId()], s.revs[sess.GetId()] = ended, s.rev
	return ended, nil
}

func (s *memStore) UpdateSession(_ context.Context, sess *fleetv1.Session, rev int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "update:"+sess.GetState().String())
	if s.revs[sess.GetId()] != rev {
		return 0, fleetstore.ErrConflict
	}
	s.rev++
	s.records[sess.GetId()], s.revs[sess.GetId()] = proto.Clone(sess).(*fleetv1.Session), s.rev
	return s.rev, nil
}

// Worker returns a record for any worker id (its address is not dialled:
// the tests' worker dialer is a fake).
func (s *memStore) Worker(_ context.Context, id string) (*fleetv1.Worker, error) {
	return &fleetv1.Worker{Id: id, GrpcAddress: id + ":0"}, nil
}

// fakeWorkers is a fake WorkerDialer (unit tests only) whose workers report
// every session in one state, or fail the call.
type fakeWorkers struct {
	state fleetv1.SessionState
	err   error
}

func (f fakeWorkers) Client(string, string) (fleetv1.WorkerServiceClient, error) {
	return fakeWorkerClient{state: f.state, err: f.err}, nil
}

type fakeWorkerClient struct {
	fleetv1.WorkerServiceClient // other calls are not made: they would panic
	state                       fleetv1.SessionState
	err                         error
}

func (c fakeWorkerClient) SessionStatus(context.Context, *fleetv1.SessionStatusRequest, ...grpc.CallOption) (*fleetv1.SessionStatusResponse, error) {
	if c.err != nil {
		return nil, c.err
	}
	return &fleetv1.SessionStatusResponse{State: c.state}, nil
}

func (s *memStore) DeleteSessionRecord(_ context.Context, id string, rev int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "delete_record")
	if s.revs[id] == rev {
		delete(s.records, id)
		delete(s.revs, id)
	}
	return nil
}

// memReplacer records what it is asked to re-place and marks it ready.
type memReplacer struct {
	store *memStore
	mu    sync.Mutex
	calls []string
}

func (r *memReplacer) Replace(_ context.Context, id string, rev int64, reason string) (*fleetv1.Session, error) {
	r.mu.Lock()
	r.calls = append(r.calls, fmt.Sprintf("%s@%d:%s", id, rev, reason))
	r.mu.Unlock()
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	if r.store.revs[id] != rev {
		return nil, fmt.Errorf("moved on")
	}
	sess := proto.Clone(r.store.records[id]).(*fleetv1.Session)
	sess.State, sess.WorkerId, sess.LostAt, sess.Moves = fleetv1.SessionState_SESSION_STATE_READY, "w2", nil, sess.GetMoves()+1
	r.store.rev++
	r.store.records[id], r.store.revs[id] = sess, r.store.rev
	k := r.store.keys.Slot("w2", 0, 0)
	r.store.slots[k], r.store.slotRev[k] = id, r.store.rev
	return sess, nil
}

func (r *memReplacer) asked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func ready(id, worker string, policy fleetv1.RestartPolicy) *fleetv1.Session {
	return &fleetv1.Session{Id: id, State: fleetv1.SessionState_SESSION_STATE_READY, WorkerId: worker,
		RestartPolicy: policy, CreatedAt: timestamppb.Now()}
}

// TestReaperDecides: what the leader does with a session record in each
// situation, from a listing (a new leader, a resync) or a slot deletion.
func TestReaperDecides(t *testing.T) {
	old := timestamppb.New(time.Now().Add(-time.Hour))
	tests := []struct {
		name     string
		record   *fleetv1.Session
		slotHeld bool
		// deleted sends a slot deletion naming the session after the listing.
		deleted    bool
		noReplacer bool
		workers    *fakeWorkers // nil: no worker dialer
		wantState  fleetv1.SessionState
		wantCalls  []string // store calls, in order
		wantAsked  int      // Replace calls
		gone       bool     // the record is expired
	}{
		{name: "slot vanished: re-placed", record: ready("s", "w1", 0), slotHeld: true, deleted: true,
			wantState: fleetv1.SessionState_SESSION_STATE_READY, wantCalls: []string{"mark_lost"}, wantAsked: 1},
		{name: "slot vanished, restart_policy never: failed", record: ready("s", "w1", fleetv1.RestartPolicy_RESTART_POLICY_NEVER), slotHeld: true, deleted: true,
			wantState: fleetv1.SessionState_SESSION_STATE_FAILED, wantCalls: []string{"fail_lost"}},
		{name: "no replacer: failed", record: ready("s", "w1", 0), slotHeld: true, deleted: true, noReplacer: true,
			wantState: fleetv1.SessionState_SESSION_STATE_FAILED, wantCalls: []string{"fail_lost"}},
		{name: "deletion of an earlier attempt's slot: the record holds another", record: ready("s", "w2", 0), slotHeld: true, deleted: true,
			wantState: fleetv1.SessionState_SESSION_STATE_READY},
		{name: "a create in flight owns its starting record", slotHeld: true, deleted: true,
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: timestamppb.Now()},
			wantState: fleetv1.SessionState_SESSION_STATE_STARTING},
		{name: "placing left by a previous leader: re-placed at its revision",
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_PLACING, WorkerId: "w1", LostAt: timestamppb.Now(), CreatedAt: timestamppb.Now()},
			wantState: fleetv1.SessionState_SESSION_STATE_READY, wantAsked: 1},
		{name: "ready without its slot in the listing: re-placed", record: ready("s", "w1", 0),
			wantState: fleetv1.SessionState_SESSION_STATE_READY, wantCalls: []string{"mark_lost"}, wantAsked: 1},
		{name: "ready with its slot: left alone", record: ready("s", "w1", 0), slotHeld: true,
			wantState: fleetv1.SessionState_SESSION_STATE_READY},
		{name: "abandoned create, worker does not run it: failed with error", slotHeld: true,
			workers:   &fakeWorkers{err: errors.New("no such session")},
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: old},
			wantState: fleetv1.SessionState_SESSION_STATE_FAILED, wantCalls: []string{"end:END_REASON_ERROR"}},
		{name: "ready mark given up, then the worker lost: re-placed",
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: timestamppb.New(time.Now().Add(-recoverAfter - time.Second))},
			wantState: fleetv1.SessionState_SESSION_STATE_READY, wantCalls: []string{"mark_lost"}, wantAsked: 1},
		{name: "ready mark given up, then the worker lost, restart_policy never: failed worker_lost",
			record: &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: timestamppb.New(time.Now().Add(-recoverAfter - time.Second)),
				RestartPolicy: fleetv1.RestartPolicy_RESTART_POLICY_NEVER},
			wantState: fleetv1.SessionState_SESSION_STATE_FAILED, wantCalls: []string{"fail_lost"}},
		{name: "replica died before the ready mark, worker runs it: ready", slotHeld: true,
			workers:   &fakeWorkers{state: fleetv1.SessionState_SESSION_STATE_READY},
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: timestamppb.New(time.Now().Add(-recoverAfter - time.Second))},
			wantState: fleetv1.SessionState_SESSION_STATE_READY, wantCalls: []string{"update:SESSION_STATE_READY"}},
		{name: "starting past recoverAfter, worker does not run it: left until startGrace", slotHeld: true,
			workers:   &fakeWorkers{err: errors.New("no such session")},
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: timestamppb.New(time.Now().Add(-recoverAfter - time.Second))},
			wantState: fleetv1.SessionState_SESSION_STATE_STARTING},
		{name: "starting, younger than recoverAfter: the worker is not asked", slotHeld: true,
			workers:   &fakeWorkers{state: fleetv1.SessionState_SESSION_STATE_READY},
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: timestamppb.New(time.Now().Add(-time.Second))},
			wantState: fleetv1.SessionState_SESSION_STATE_STARTING},
		{name: "abandoned create whose worker runs it but lost its slot (a zombie): re-placed",
			workers:   &fakeWorkers{state: fleetv1.SessionState_SESSION_STATE_READY},
			record:    &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1", CreatedAt: old},
			wantState: fleetv1.SessionState_SESSION_STATE_READY, wantCalls: []string{"mark_lost"}, wantAsked: 1},
		{name: "ended past retention: expired",
			record: &fleetv1.Session{Id: "s", State: fleetv1.SessionState_SESSION_STATE_ENDED, EndedAt: old},
			gone:   true, wantCalls: []string{"delete_record"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			st.put(tt.record, tt.slotHeld)
			rep := &memReplacer{store: st}
			opts := Options{Log: slog.New(slog.DiscardHandler), Retention: time.Minute, ReplaceConcurrency: 4}
			if !tt.noReplacer {
				opts.Replacer = rep
			}
			if tt.workers != nil {
				opts.Workers = *tt.workers
			}
			s := New(opts)
			s.store = st
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = s.reapLoop(ctx) }()
			if tt.deleted {
				<-st.listed
				key := st.keys.Slot("w1", 0, 0)
				st.mu.Lock() // the worker's lease goes: its slot key with it
				if st.slots[key] == "s" {
					delete(st.slots, key)
					delete(st.slotRev, key)
				}
				st.mu.Unlock()
				st.events <- []fleetstore.Event{{Type: fleetstore.EventDelete, KV: fleetstore.KV{Key: key}, Prev: &fleetstore.KV{Key: key, Value: []byte("s")}}}
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				rec, calls := st.recordOrNil("s")
				settled := len(calls) >= len(tt.wantCalls) && len(rep.asked()) >= tt.wantAsked &&
					(tt.gone && rec == nil || !tt.gone && rec != nil && rec.GetState() == tt.wantState)
				if settled || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // anything more it would do, it has done by now
			cancel()
			<-done
			rec, calls := st.recordOrNil("s")
			if fmt.Sprint(calls) != fmt.Sprint(tt.wantCalls) {
				t.Errorf("store calls %v, want %v", calls, tt.wantCalls)
			}
			if n := len(rep.asked()); n != tt.wantAsked {
				t.Errorf("asked to re-place %d times (%v), want %d", n, rep.asked(), tt.wantAsked)
			}
			if tt.gone != (rec == nil) || rec != nil && rec.GetState() != tt.wantState {
				t.Errorf("record %v, want state %s (gone %v)", rec, tt.wantState, tt.gone)
			}
		})
	}
}

func (s *memStore) recordOrNil(id string) (*fleetv1.Session, []string) {
	s.mu.Lock()
	_, ok := s.records[id]
	s.mu.Unlock()
	if !ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		return nil, append([]string(nil), s.calls...)
	}
	return s.record(id)
}

// TestJobsBoundAndRerun: at most limit jobs run at once, one per id; a
// start for a running id runs it once more afterwards.
func TestJobsBoundAndRerun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		running, peak atomic.Int32
		mu            sync.Mutex
		runs          = map[string]int{}
		release       = make(chan struct{})
	)
	j := newJobs(ctx, 2, func(_ context.Context, id string) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		mu.Lock()
		runs[id]++
		mu.Unlock()
		<-release
		running.Add(-1)
	})
	for i := range 5 {
		j.start(fmt.Sprintf("s%d", i))
	}
	j.start("s0") // while s0 runs or waits: once more afterwards
	j.start("s0") // marks, does not stack
	deadline := time.Now().Add(10 * time.Second)
	for running.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	for j.running() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	j.wait()
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2", p)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range 5 {
		id := fmt.Sprintf("s%d", i)
		want := 1
		if id == "s0" {
			want = 2
		}
		if runs[id] != want {
			t.Errorf("%s ran %d times, want %d", id, runs[id], want)
		}
	}
}
