package sessions

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/avatarfleet/avatarfleet/proto/embedded/embeddedtest"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// startEtcd starts a real embedded etcd and returns a store over it.
func startEtcd(t *testing.T) (*fleetstore.Store, *clientv3.Client) {
	t.Helper()
	_, cli := embeddedtest.Etcd(t)
	return fleetstore.New(cli, fleetstore.NewKeys("/test/")), cli
}

// putStarting writes starting records as a reservation would and returns
// their revisions.
func putStarting(t *testing.T, st *fleetstore.Store, cli *clientv3.Client, ids ...string) map[string]int64 {
	t.Helper()
	revs := map[string]int64{}
	for _, id := range ids {
		b, err := proto.Marshal(&fleetv1.Session{Id: id, State: fleetv1.SessionState_SESSION_STATE_STARTING, WorkerId: "w1"})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Put(context.Background(), st.Keys().Session(id), string(b))
		if err != nil {
			t.Fatal(err)
		}
		revs[id] = resp.Header.Revision
	}
	return revs
}

func readyOf(id string) *fleetv1.Session {
	return &fleetv1.Session{Id: id, State: fleetv1.SessionState_SESSION_STATE_READY, WorkerId: "w1"}
}

// runWriter runs w until the test ends.
func runWriter(t *testing.T, w *batchWriter) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// flakyStore fails the first fail commits, then commits to the real store.
type flakyStore struct {
	*fleetstore.Store
	mu    sync.Mutex
	fail  int
	calls int
}

func (f *flakyStore) failing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail > 0 {
		f.fail--
		return true
	}
	return false
}

func (f *flakyStore) UpdateSessions(ctx context.Context, u []fleetstore.SessionUpdate) error {
	if f.failing() {
		return errors.New("etcd unavailable (injected)")
	}
	return f.Store.UpdateSessions(ctx, u)
}

func (f *flakyStore) UpdateSession(ctx context.Context, s *fleetv1.Session, rev int64) (int64, error) {
	if f.failing() {
		return 0, errors.New("etcd unavailable (injected)")
	}
	return f.Store.UpdateSession(ctx, s, rev)
}

// TestMarksGroupCommit: ready marks queued together go to etcd in one
// transaction (one revision); a mark whose record moved on is dropped and
// the others still land; a commit that fails is retried; one that keeps
// failing is given up (the reaper recovers it) and Await still returns.
func TestMarksGroupCommit(t *testing.T) {
	tests := []struct {
		name      string
		marks     int
		stale     int // marks whose record moved on after the reservation
		fail      int // commits failing before etcd answers
		tries     int
		wantTxns  int64 // revisions the marks cost; -1: do not check
		wantReady int
	}{
		{name: "40 marks, one transaction", marks: 40, wantTxns: 1, wantReady: 40},
		{name: "a stale mark is dropped, the others land", marks: 10, stale: 1, wantTxns: -1, wantReady: 9},
		{name: "failed commits are retried", marks: 5, fail: 2, tries: 5, wantTxns: -1, wantReady: 5},
		{name: "a mark that keeps failing is left to the reaper", marks: 1, fail: 100, tries: 3, wantTxns: 0, wantReady: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, cli := startEtcd(t)
			var ids []string
			for i := range tt.marks {
				ids = append(ids, "sess_"+string(rune('a'+i/26))+string(rune('a'+i%26)))
			}
			revs := putStarting(t, st, cli, ids...)
			for _, id := range ids[:tt.stale] { // another party changed the record
				putStarting(t, st, cli, id)
			}
			fs := &flakyStore{Store: st, fail: tt.fail}
			w := newBatchWriter(fs, slog.New(slog.DiscardHandler))
			w.lanes, w.markBackoff = 1, time.Millisecond
			if tt.tries > 0 {
				w.markTries = tt.tries
			}
			for _, id := range ids { // queued before the writer runs: one batch
				w.Mark(readyOf(id), revs[id])
			}
			before, err := cli.Get(context.Background(), "/test/none")
			if err != nil {
				t.Fatal(err)
			}
			runWriter(t, w)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, id := range ids {
				if !w.Await(ctx, id) {
					// settled already: fine, its entry is gone
					continue
				}
			}
			if ctx.Err() != nil {
				t.Fatal("marks did not settle")
			}
			after, err := cli.Get(context.Background(), "/test/none")
			if err != nil {
				t.Fatal(err)
			}
			if n := after.Header.Revision - before.Header.Revision; tt.wantTxns >= 0 && n != tt.wantTxns {
				t.Errorf("marks cost %d revisions, want %d", n, tt.wantTxns)
			}
			ready := 0
			for _, id := range ids {
				sess, _, err := st.Session(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if sess.GetState() == fleetv1.SessionState_SESSION_STATE_READY {
					ready++
				}
			}
			if ready != tt.wantReady {
				t.Errorf("%d records ready, want %d", ready, tt.wantReady)
			}
		})
	}
}

// TestGetWaitsForReadyMark: a read right after a create never shows the
// record starting while its mark is queued — on the creating replica (its
// own queue) or on another (polling) — and a record nobody marks is shown
// as it is once ReadySettle passes.
func TestGetWaitsForReadyMark(t *testing.T) {
	st, cli := startEtcd(t)
	revs := putStarting(t, st, cli, "sess_a", "sess_orphan")
	opts := quiet()
	opts.Store, opts.ReadySettle = st, 300*time.Millisecond
	creating, other := NewManager(opts), NewManager(opts)
	creating.writer.Mark(readyOf("sess_a"), revs["sess_a"]) // queued; the writer starts later
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	results := make(chan *fleetv1.Session, 2)
	for _, m := range []*Manager{creating, other} {
		wg.Go(func() {
			sess, err := m.Get(ctx, "sess_a")
			if err != nil {
				t.Error(err)
			}
			results <- sess
		})
	}
	time.Sleep(50 * time.Millisecond) // both reads are waiting
	wg.Go(func() { _ = creating.Run(ctx) })
	for range 2 {
		if sess := <-results; sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
			t.Errorf("read after the mark was queued shows %s, want ready", sess.GetState())
		}
	}
	start := time.Now()
	sess, err := other.Get(ctx, "sess_orphan")
	if err != nil {
		t.Fatal(err)
	}
	if sess.GetState() != fleetv1.SessionState_SESSION_STATE_STARTING {
		t.Errorf("unmarked record shows %s, want starting", sess.GetState())
	}
	if d := time.Since(start); d < opts.ReadySettle {
		t.Errorf("unmarked record returned after %v, before ReadySettle %v", d, opts.ReadySettle)
	}
}

// hangingStore does not answer its first hang commits until their context
// ends (an etcd without a leader, or a member starved of CPU), then
// commits to the real store.
type hangingStore struct {
	*fleetstore.Store
	mu   sync.Mutex
	hang int
}

func (h *hangingStore) wait(ctx context.Context) error {
	h.mu.Lock()
	hang := h.hang > 0
	if hang {
		h.hang--
	}
	h.mu.Unlock()
	if !hang {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (h *hangingStore) UpdateSessions(ctx context.Context, u []fleetstore.SessionUpdate) error {
	if err := h.wait(ctx); err != nil {
		return err
	}
	return h.Store.UpdateSessions(ctx, u)
}

func (h *hangingStore) UpdateSession(ctx context.Context, s *fleetv1.Session, rev int64) (int64, error) {
	if err := h.wait(ctx); err != nil {
		return 0, err
	}
	return h.Store.UpdateSession(ctx, s, rev)
}

// TestCommitThatHangsIsBounded: a commit etcd never answers holds its lane
// for at most commitTimeout per try. Without the bound one such commit
// stalled its lane for good (commits run without the request's context):
// the marks behind it never landed, the queue filled and creates blocked
// in Mark. A mark caught in it is left to the reaper; the marks and writes
// after it commit.
func TestCommitThatHangsIsBounded(t *testing.T) {
	tests := []struct {
		name      string
		hang      int
		wantFirst fleetv1.SessionState // the mark caught in the hang
	}{
		{name: "one hung try, the retry lands", hang: 1, wantFirst: fleetv1.SessionState_SESSION_STATE_READY},
		{name: "every try hangs: given up, left starting", hang: 2, wantFirst: fleetv1.SessionState_SESSION_STATE_STARTING},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, cli := startEtcd(t)
			revs := putStarting(t, st, cli, "sess_hung", "sess_next", "sess_write")
			w := newBatchWriter(&hangingStore{Store: st, hang: tt.hang}, slog.New(slog.DiscardHandler))
			w.lanes, w.markTries, w.markBackoff, w.commitTimeout = 1, 2, time.Millisecond, 100*time.Millisecond
			runWriter(t, w)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			w.Mark(readyOf("sess_hung"), revs["sess_hung"])
			w.Await(ctx, "sess_hung")
			w.Mark(readyOf("sess_next"), revs["sess_next"])
			w.Await(ctx, "sess_next")
			if err := w.Write(ctx, readyOf("sess_write"), revs["sess_write"]); err != nil {
				t.Fatalf("write after the hang: %v", err)
			}
			if ctx.Err() != nil {
				t.Fatal("the lane stayed stalled by a commit etcd never answered")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the hang held the lane %s; want about %d × 100 ms", d, tt.hang)
			}
			for id, want := range map[string]fleetv1.SessionState{"sess_hung": tt.wantFirst,
				"sess_next": fleetv1.SessionState_SESSION_STATE_READY, "sess_write": fleetv1.SessionState_SESSION_STATE_READY} {
				sess, _, err := st.Session(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if sess.GetState() != want {
					t.Errorf("%s: %s, want %s", id, sess.GetState(), want)
				}
			}
		})
	}
}

// TestGetOnStuckOwnMarkIsBounded: a read on the creating replica whose
// own mark does not settle (its commit hangs in etcd) returns the record
// as it is after ReadySettle, instead of waiting for the mark's every try.
func TestGetOnStuckOwnMarkIsBounded(t *testing.T) {
	st, cli := startEtcd(t)
	revs := putStarting(t, st, cli, "sess_stuck")
	opts := quiet()
	opts.Store, opts.ReadySettle = st, 200*time.Millisecond
	m := NewManager(opts)
	m.writer.store = &hangingStore{Store: st, hang: 1000}
	// One try of 2 s: the mark settles (given up) well after ReadySettle.
	m.writer.markTries, m.writer.commitTimeout = 1, 2*time.Second
	runWriter(t, m.writer)
	m.writer.Mark(readyOf("sess_stuck"), revs["sess_stuck"])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	sess, err := m.Get(ctx, "sess_stuck")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < opts.ReadySettle || d > 1500*time.Millisecond {
		t.Errorf("read returned after %v; want about ReadySettle (%v)", d, opts.ReadySettle)
	}
	if sess.GetState() != fleetv1.SessionState_SESSION_STATE_STARTING {
		t.Errorf("record shows %s, want starting (its mark has not landed)", sess.GetState())
	}
}
