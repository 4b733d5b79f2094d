package sessions

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// In-memory stand-ins for etcd, the registry and workers, with the same
// guards as the real transactions, for unit tests of placement logic.

type memRecord struct {
	sess *fleetv1.Session
	rev  int64
}

type memStore struct {
	mu      sync.Mutex
	rev     int64
	records map[string]memRecord
	slots   map[slotID]string
	workers map[string]int64 // worker → record revision
	// loseNext makes that many reservations fail as if another replica won.
	loseNext int
	calls    map[string]int
	// holdMarks keeps ready marks back (see Mark).
	holdMarks bool
	heldMarks []memMark
}

func newMemStore() *memStore {
	return &memStore{records: map[string]memRecord{}, slots: map[slotID]string{}, workers: map[string]int64{}, calls: map[string]int{}}
}

func (s *memStore) next() int64 { s.rev++; return s.rev }

func (s *memStore) addWorker(id string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workers[id] = s.next()
	return s.workers[id]
}

func (s *memStore) count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

func (s *memStore) canReserve(r fleetstore.Reservation) bool {
	if s.loseNext > 0 {
		s.loseNext--
		return false
	}
	_, taken := s.slots[slotID{r.Worker, r.GPU, r.Slot}]
	return !taken && s.workers[r.Worker] == r.WorkerRevision && r.WorkerRevision != 0
}

func (s *memStore) Reserve(_ context.Context, r fleetstore.Reservation, sess *fleetv1.Session) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["reserve"]++
	sess.WorkerId, sess.Gpu, sess.Slot = r.Worker, r.GPU, r.Slot
	if _, exists := s.records[sess.GetId()]; exists || !s.canReserve(r) {
		return s.rev, false, nil
	}
	rev := s.next()
	s.slots[slotID{r.Worker, r.GPU, r.Slot}] = sess.GetId()
	s.records[sess.GetId()] = memRecord{proto.Clone(sess).(*fleetv1.Session), rev}
	return rev, true, nil
}

func (s *memStore) Unreserve(_ context.Context, sess *fleetv1.Session, rev int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["unreserve"]++
	if s.records[sess.GetId()].rev != rev {
		return fleetstore.ErrConflict
	}
	delete(s.records, sess.GetId())
	s.release(sess.GetId(), fleetstore.SlotOf(sess))
	return nil
}

func (s *memStore) release(id string, refs ...*fleetv1.SlotRef) {
	for _, ref := range refs {
		if ref == nil {
			continue
		}
		k := slotID{ref.GetWorkerId(), ref.GetGpu(), ref.GetSlot()}
		if s.slots[k] == id {
			delete(s.slots, k)
		}
	}
}

func (s *memStore) ReserveMove(_ context.Context, r fleetstore.Reservation, sess *fleetv1.Session, rev int64, release ...*fleetv1.SlotRef) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["reserve_move"]++
	sess.WorkerId, sess.Gpu, sess.Slot = r.Worker, r.GPU, r.Slot
	if s.records[sess.GetId()].rev != rev || !s.canReserve(r) {
		return s.rev, false, nil
	}
	s.release(sess.GetId(), release...)
	newRev := s.next()
	s.slots[slotID{r.Worker, r.GPU, r.Slot}] = sess.GetId()
	s.records[sess.GetId()] = memRecord{proto.Clone(sess).(*fleetv1.Session), newRev}
	return newRev, true, nil
}

func (s *memStore) Unplace(_ context.Context, sess *fleetv1.Session, rev int64, release ...*fleetv1.SlotRef) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["unplace"]++
	if s.records[sess.GetId()].rev != rev {
		return 0, fleetstore.ErrConflict
	}
	s.release(sess.GetId(), release...)
	newRev := s.next()
	s.records[sess.GetId()] = memRecord{proto.Clone(sess).(*fleetv1.Session), newRev}
	return newRev, nil
}

func (s *memStore) EndSessionAt(_ context.Context, sess *fleetv1.Session, rev int64, state fleetv1.SessionState, reason fleetv1.EndReason, msg string) (*fleetv1.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls["end"]++
	if s.records[sess.GetId()].rev != rev {
		return nil, fleetstore.ErrConflict
	}
	ended := proto.Clone(sess).(*fleetv1.Session)
	ended.State, ended.EndReason, ended.EndMessage, ended.EndedAt = state, reason, msg, timestamppb.Now()
	s.release(sess.GetId(), fleetstore.SlotOf(sess))
	s.records[sess.GetId()] = memRecord{ended, s.next()}
	return ended, nil
}

func (s *memStore) EndSession(ctx context.Context, id string, state fleetv1.SessionState, reason fleetv1.EndReason, msg string) (*fleetv1.Session, bool, error) {
	cur, rev, err := s.Session(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if fleetstore.Terminal(cur.GetState()) {
		return cur, false, nil
	}
	ended, err := s.EndSessionAt(ctx, cur, rev, state, reason, msg)
	return ended, err == nil, err
}

func (s *memStore) UpdateSession(_ context.Context, sess *fleetv1.Session, rev int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.records[sess.GetId()].rev != rev {
		return 0, fleetstore.ErrConflict
	}
	newRev := s.next()
	s.records[sess.GetId()] = memRecord{proto.Clone(sess).(*fleetv1.Session), newRev}
	return newRev, nil
}

func (s *memStore) Write(ctx context.Context, sess *fleetv1.Session, rev int64) error {
	_, err := s.UpdateSession(ctx, sess, rev)
	return err
}

// Mark writes at once, unless holdMarks: then the marks wait in
// heldMarks until releaseMarks (a replica that has not written them yet).
func (s *memStore) Mark(sess *fleetv1.Session, rev int64) {
	s.mu.Lock()
	if s.holdMarks {
		s.heldMarks = append(s.heldMarks, memMark{sess, rev})
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	_, _ = s.UpdateSession(context.Background(), sess, rev)
}

func (s *memStore) Await(context.Context, string) bool { return false }

type memMark struct {
	sess *fleetv1.Session
	rev  int64
}

func (s *memStore) releaseMarks() {
	s.mu.Lock()
	held := s.heldMarks
	s.heldMarks, s.holdMarks = nil, false
	s.mu.Unlock()
	for _, m := range held {
		_, _ = s.UpdateSession(context.Background(), m.sess, m.rev)
	}
}

func (s *memStore) Session(_ context.Context, id string) (*fleetv1.Session, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		return nil, 0, fmt.Errorf("session %s: %w", id, fleetstore.ErrNotFound)
	}
	return proto.Clone(r.sess).(*fleetv1.Session), r.rev, nil
}

// put writes a record as it would be after earlier steps.
func (s *memStore) put(sess *fleetv1.Session) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := s.next()
	s.records[sess.GetId()] = memRecord{proto.Clone(sess).(*fleetv1.Session), rev}
	return rev
}

// memFleet is the registry's view over memStore: workers of one GPU with
// the given slots, their use read from the store's slots.
type memFleet struct {
	store   *memStore
	mu      sync.Mutex
	workers []registry.WorkerView
	// blind models a registry whose watch has gone silent: the slots it
	// sees used are only those this replica noted, never the store's.
	blind    bool
	noted    map[slotID]string
	confirms int
}

// usedSlots is the set of used slots the fleet view sees.
func (f *memFleet) usedSlots() map[slotID]bool {
	out := map[slotID]bool{}
	f.mu.Lock()
	blind := f.blind
	for k := range f.noted {
		out[k] = true
	}
	f.mu.Unlock()
	if blind {
		return out
	}
	f.store.mu.Lock()
	defer f.store.mu.Unlock()
	out = map[slotID]bool{}
	for k := range f.store.slots {
		out[k] = true
	}
	return out
}

func (f *memFleet) add(id string, slots uint32, mutate ...func(*registry.WorkerView)) {
	rev := f.store.addWorker(id)
	v := registry.WorkerView{
		Worker:   &fleetv1.Worker{Id: id, State: fleetv1.WorkerState_WORKER_STATE_ACTIVE, GrpcAddress: id + ":1", Gpus: []*fleetv1.GPU{{Index: 0, Slots: slots}}},
		Revision: rev,
	}
	for _, m := range mutate {
		m(&v)
	}
	f.mu.Lock()
	f.workers = append(f.workers, v)
	f.mu.Unlock()
}

func (f *memFleet) Workers() []registry.WorkerView {
	f.mu.Lock()
	workers := slices.Clone(f.workers)
	f.mu.Unlock()
	used := f.usedSlots()
	out := make([]registry.WorkerView, len(workers))
	for i, v := range workers {
		n := 0
		for k := range used {
			if k.worker == v.Worker.GetId() {
				n++
			}
		}
		v.UsedPerGPU, v.Sessions = map[uint32]int{0: n}, n
		out[i] = v
	}
	return out
}

func (f *memFleet) Worker(id string) (registry.WorkerView, bool) {
	for _, v := range f.Workers() {
		if v.Worker.GetId() == id {
			return v, true
		}
	}
	return registry.WorkerView{}, false
}

func (f *memFleet) FreeSlot(worker string, gpu uint32, slots int, start int, skip func(uint32) bool) (uint32, bool) {
	used := f.usedSlots()
	for i := range slots {
		s := uint32((start + i) % slots)
		if used[slotID{worker, gpu, s}] || skip(s) {
			continue
		}
		return s, true
	}
	return 0, false
}

func (f *memFleet) NoteReserved(worker string, ref registry.SlotRef, session string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noted == nil {
		f.noted = map[slotID]string{}
	}
	f.noted[slotID{worker, ref.GPU, ref.Slot}] = session
}

// ConfirmSlots reads the store: a blind view sees its slots from then on
// (as the registry takes a fresh listing of them).
func (f *memFleet) ConfirmSlots(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.confirms++
	if !f.blind {
		return false, nil
	}
	f.store.mu.Lock()
	defer f.store.mu.Unlock()
	f.noted = map[slotID]string{}
	for k, id := range f.store.slots {
		f.noted[k] = id
	}
	return true, nil
}

func (f *memFleet) NoteReleased(worker string, ref registry.SlotRef, session string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k := (slotID{worker, ref.GPU, ref.Slot}); f.noted[k] == session {
		delete(f.noted, k)
	}
}

// memWorkers answers StartSession per worker: refuse lists the workers that
// refuse every start.
type memWorkers struct {
	mu      sync.Mutex
	refuse  map[string]bool
	started []*fleetv1.StartSessionRequest
	starts  map[string]int // per worker
}

func newMemWorkers() *memWorkers {
	return &memWorkers{refuse: map[string]bool{}, starts: map[string]int{}}
}

func (w *memWorkers) Client(id, _ string) (fleetv1.WorkerServiceClient, error) {
	return &memWorker{id: id, w: w}, nil
}

type memWorker struct {
	fleetv1.WorkerServiceClient // methods not overridden panic: unused here
	id                          string
	w                           *memWorkers
}

func (c *memWorker) StopSession(context.Context, *fleetv1.StopSessionRequest, ...grpc.CallOption) (*fleetv1.StopSessionResponse, error) {
	return &fleetv1.StopSessionResponse{}, nil
}

func (c *memWorker) StartSession(_ context.Context, req *fleetv1.StartSessionRequest, _ ...grpc.CallOption) (*fleetv1.StartSessionResponse, error) {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	c.w.starts[c.id]++
	if c.w.refuse[c.id] {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	c.w.started = append(c.w.started, proto.Clone(req).(*fleetv1.StartSessionRequest))
	return &fleetv1.StartSessionResponse{State: fleetv1.SessionState_SESSION_STATE_READY}, nil
}

func (w *memWorkers) startsOn(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.starts[id]
}

func (w *memWorkers) lastStart() *fleetv1.StartSessionRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.started) == 0 {
		return nil
	}
	return w.started[len(w.started)-1]
}

type fixture struct {
	m       *Manager
	store   *memStore
	fleet   *memFleet
	workers *memWorkers
}

func newFixture(opts Options) *fixture {
	st := newMemStore()
	fx := &fixture{store: st, fleet: &memFleet{store: st}, workers: newMemWorkers()}
	fx.m = newManager(opts, deps{store: st, fleet: fx.fleet, workers: fx.workers, writer: st})
	return fx
}
