package sessions

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/workerclient"
	"github.com/avatarfleet/avatarfleet/proto/embedded/embeddedtest"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// speechWorker is a worker's gRPC service that records what it is asked to
// speak, and refuses texts that start with "refuse".
type speechWorker struct {
	fleetv1.UnimplementedWorkerServiceServer
	id          string
	mu          sync.Mutex
	spoken      []*fleetv1.SpeakTextRequest
	interrupted int
	// fail, when set, answers a text instead (a worker going away).
	fail func(req *fleetv1.SpeakTextRequest) error
}

func (w *speechWorker) SpeakText(_ context.Context, req *fleetv1.SpeakTextRequest) (*fleetv1.SpeakTextResponse, error) {
	if strings.HasPrefix(req.GetText(), "refuse") {
		return nil, status.Error(codes.InvalidArgument, "refused")
	}
	w.mu.Lock()
	fail := w.fail
	w.mu.Unlock()
	if fail != nil {
		if err := fail(req); err != nil {
			return nil, err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.spoken = append(w.spoken, req)
	return &fleetv1.SpeakTextResponse{}, nil
}

func (w *speechWorker) Interrupt(context.Context, *fleetv1.InterruptRequest) (*fleetv1.InterruptResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.interrupted++
	return &fleetv1.InterruptResponse{}, nil
}

func (w *speechWorker) interrupts() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.interrupted
}

// take returns and forgets the requests received so far.
func (w *speechWorker) take() []*fleetv1.SpeakTextRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.spoken
	w.spoken = nil
	return out
}

// speechFixture is a Manager over a real etcd and registry, and one worker
// (speechWorker over real gRPC) hosting a ready session "s1".
type speechFixture struct {
	m      *Manager
	store  *fleetstore.Store
	reg    *registry.Registry
	worker *speechWorker
	sess   *fleetv1.Session
	rev    int64 // of the ready record
}

// startSpeechWorker serves a speechWorker over loopback gRPC and registers
// it as worker id, active with one slot, under a lease of its own; edits
// change the record first.
func startSpeechWorker(ctx context.Context, t *testing.T, store *fleetstore.Store, id string, edits ...func(*fleetv1.Worker)) (*speechWorker, *fleetv1.Worker, clientv3.LeaseID) {
	t.Helper()
	w := &speechWorker{id: id}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fleetv1.RegisterWorkerServiceServer(srv, w)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	lease, err := store.GrantLease(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rec := &fleetv1.Worker{Id: id, GrpcAddress: lis.Addr().String(), State: fleetv1.WorkerState_WORKER_STATE_ACTIVE,
		Gpus: []*fleetv1.GPU{{Index: 0, Slots: 1}}}
	for _, edit := range edits {
		edit(rec)
	}
	if err := store.PutWorker(ctx, rec, lease); err != nil {
		t.Fatal(err)
	}
	return w, rec, lease
}

func newSpeechFixture(t *testing.T) *speechFixture {
	t.Helper()
	_, cli := embeddedtest.Etcd(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	store := fleetstore.New(cli, fleetstore.NewKeys("/speech-test/"))

	w, _, lease := startSpeechWorker(ctx, t, store, "w1")
	wrec, err := cli.Get(ctx, store.Keys().Worker("w1"))
	if err != nil {
		t.Fatal(err)
	}
	sess := &fleetv1.Session{Id: "s1", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	rev, ok, err := store.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: wrec.Kvs[0].ModRevision}, sess)
	if err != nil || !ok {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	sess.State = fleetv1.SessionState_SESSION_STATE_READY
	if rev, err = store.UpdateSession(ctx, sess, rev); err != nil {
		t.Fatal(err)
	}

	reg := registry.New(store, slog.New(slog.DiscardHandler))
	rctx, stop := context.WithCancel(context.Background())
	regDone := make(chan struct{})
	go func() { defer close(regDone); _ = reg.Run(rctx) }()
	t.Cleanup(func() { stop(); <-regDone })
	select {
	case <-reg.Synced():
	case <-ctx.Done():
		t.Fatal("registry never synced")
	}
	pool := workerclient.NewPool(grpc.WithTransportCredentials(insecure.NewCredentials()))
	t.Cleanup(pool.Close)
	m := NewManager(Options{Store: store, Registry: reg, Workers: pool, Log: slog.New(slog.DiscardHandler)})
	return &speechFixture{m: m, store: store, reg: reg, worker: w, sess: sess, rev: rev}
}

func (f *speechFixture) pending(t *testing.T) []fleetstore.SpeechEntry {
	t.Helper()
	es, err := f.store.PendingSpeech(t.Context(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestSpeakIsDurable: Speak writes each text to the session's speech queue
// before the worker gets it (with its speech id), takes back what the worker
// refused, interrupting speech and Interrupt empty the queue, the queue is
// bounded, and replaySpeech re-sends exactly what is left, in order, with
// the same ids.
func TestSpeakIsDurable(t *testing.T) {
	f := newSpeechFixture(t)
	ctx := t.Context()

	if err := f.m.Speak(ctx, "s1", "One. Two.", false); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Speak(ctx, "s1", "Three.", false); err != nil {
		t.Fatal(err)
	}
	got := f.worker.take()
	queued := f.pending(t)
	if len(got) != 2 || len(queued) != 2 {
		t.Fatalf("worker got %d texts, %d queued; want 2 and 2", len(got), len(queued))
	}
	for i, e := range queued {
		if got[i].GetSpeechId() != e.ID || got[i].GetText() != e.Text || got[i].GetInterrupt() {
			t.Fatalf("text %d: worker got %v, queued %+v", i, got[i], e)
		}
	}

	// The worker refuses a text: it is not left queued.
	if err := f.m.Speak(ctx, "s1", "refuse this.", false); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("refused speak: %v, want ErrInvalidInput", err)
	}
	if n := len(f.pending(t)); n != 2 {
		t.Fatalf("%d queued after a refused text, want 2", n)
	}

	// The old worker spoke "One." before it was lost; its replacement gets
	// the rest, in order, with the same ids.
	if ok, err := f.store.AckSpeech(ctx, "s1", queued[0].ID, "One. Two.", "Two."); err != nil || !ok {
		t.Fatalf("ack: %v %v", ok, err)
	}
	if err := f.m.replaySpeech(ctx, f.sess); err != nil {
		t.Fatal(err)
	}
	replayed := f.worker.take()
	var texts, ids []string
	for _, r := range replayed {
		texts, ids = append(texts, r.GetText()), append(ids, r.GetSpeechId())
	}
	if !slices.Equal(texts, []string{"Two.", "Three."}) || !slices.Equal(ids, []string{queued[0].ID, queued[1].ID}) {
		t.Fatalf("replayed %q with ids %v, want [Two. Three.] with %s, %s", texts, ids, queued[0].ID, queued[1].ID)
	}

	// An interrupting speak replaces the queue; Interrupt empties it.
	if err := f.m.Speak(ctx, "s1", "Four.", true); err != nil {
		t.Fatal(err)
	}
	if q := f.pending(t); len(q) != 1 || q[0].Text != "Four." {
		t.Fatalf("after an interrupting speak: %+v", q)
	}
	if r := f.worker.take(); len(r) != 1 || !r[0].GetInterrupt() {
		t.Fatalf("worker got %v, want one interrupting text", r)
	}
	if err := f.m.Interrupt(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if q, n := f.pending(t), f.worker.interrupts(); len(q) != 0 || n != 1 {
		t.Fatalf("after Interrupt: %d queued, %d interrupts on the worker", len(q), n)
	}
	if err := f.m.replaySpeech(ctx, f.sess); err != nil || len(f.worker.take()) != 0 {
		t.Fatalf("replay of an empty queue: %v", err)
	}

	// The queue holds at most fleetstore.MaxPendingSpeech bytes.
	text := strings.Repeat("Words and words. ", fleetstore.MaxPendingSpeech/17/4)
	full := 0
	for range 6 {
		if err := f.m.Speak(ctx, "s1", text, false); errors.Is(err, ErrSpeechQueueFull) {
			full++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if full != 2 {
		t.Fatalf("%d of 6 quarter-queue texts refused, want 2", full)
	}

	// Deleting the session takes its queue with it.
	if _, err := f.m.Delete(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if q := f.pending(t); len(q) != 0 {
		t.Fatalf("%d texts outlive the session", len(q))
	}
}

// TestSpeakRacingAMove: a Speak whose worker fails because the session is
// leaving it (unreachable, or it no longer runs the session) reads the
// record again. While the session moves, the text stays queued for the
// move's replay; once it is ready on another worker, the text goes there
// with its speech id; when nothing moved, the failure stands and the text
// leaves the queue.
func TestSpeakRacingAMove(t *testing.T) {
	cases := []struct {
		name string
		// move changes the record while the old worker takes the call.
		move     func(t *testing.T, f *speechFixture, sess *fleetv1.Session)
		code     codes.Code
		wantErr  error
		toNew    bool // the new worker got the text
		wantKept bool // the text is still queued
	}{
		{name: "worker unreachable, session being re-placed: kept for the replay", code: codes.Unavailable, wantKept: true,
			move: func(t *testing.T, f *speechFixture, sess *fleetv1.Session) {
				sess.State, sess.LostAt = fleetv1.SessionState_SESSION_STATE_PLACING, timestamppb.Now()
			}},
		{name: "session migrating, target not started yet: kept for the replay", code: codes.NotFound, wantKept: true,
			move: func(t *testing.T, f *speechFixture, sess *fleetv1.Session) {
				sess.MigratingFrom = &fleetv1.SlotRef{WorkerId: "w1"}
				sess.WorkerId = "w2"
			}},
		{name: "session already ready on another worker: sent there", code: codes.DeadlineExceeded, toNew: true, wantKept: true,
			move: func(t *testing.T, f *speechFixture, sess *fleetv1.Session) { sess.WorkerId = "w2" }},
		{name: "nothing moved: the failure stands", code: codes.Unavailable, wantErr: ErrUnavailable,
			move: func(*testing.T, *speechFixture, *fleetv1.Session) {}},
		{name: "the session ended: the failure stands", code: codes.NotFound, wantErr: ErrNotReady,
			move: func(t *testing.T, f *speechFixture, sess *fleetv1.Session) {
				sess.State = fleetv1.SessionState_SESSION_STATE_ENDED
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newSpeechFixture(t)
			ctx := t.Context()
			w2, _, _ := startSpeechWorker(ctx, t, f.store, "w2")
			deadline := time.Now().Add(10 * time.Second)
			for _, ok := f.reg.Worker("w2"); !ok; _, ok = f.reg.Worker("w2") {
				if time.Now().After(deadline) {
					t.Fatal("the registry never saw w2")
				}
				time.Sleep(10 * time.Millisecond)
			}
			f.worker.mu.Lock()
			f.worker.fail = func(req *fleetv1.SpeakTextRequest) error {
				moved := proto.Clone(f.sess).(*fleetv1.Session)
				tc.move(t, f, moved)
				if _, err := f.store.UpdateSession(context.Background(), moved, f.rev); err != nil {
					t.Errorf("move the record: %v", err)
				}
				return status.Error(tc.code, "going away")
			}
			f.worker.mu.Unlock()

			err := f.m.Speak(ctx, "s1", "Hello there.", false)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("speak: %v, want %v", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("speak: %v, want it taken", err)
			}
			queued := f.pending(t)
			if kept := len(queued) == 1; kept != tc.wantKept {
				t.Fatalf("%d texts queued, want kept=%v", len(queued), tc.wantKept)
			}
			got := w2.take()
			if !tc.toNew {
				if len(got) != 0 {
					t.Fatalf("the other worker got %v", got)
				}
				return
			}
			if len(got) != 1 || got[0].GetText() != "Hello there." || got[0].GetSpeechId() != queued[0].ID {
				t.Fatalf("the new worker got %v, want the text with id %s", got, queued[0].ID)
			}
		})
	}
}
