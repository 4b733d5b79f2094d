package batch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// echoModel is a test double of a shared model: each output value is its
// frame's Face[0] (so a mixed-up frame shows), it records the size of every
// batch, and it fails a batch holding a frame whose Face[0] is failValue.
type echoModel struct {
	shape  lipsync.Shape
	log    *runLog
	closed bool
}

type runLog struct {
	mu    sync.Mutex
	sizes []int
}

const failValue = -7

func (m *echoModel) Shape() lipsync.Shape { return m.shape }

func (m *echoModel) Run(_ context.Context, batch []lipsync.Frame) error {
	if err := lipsync.Check(m.shape, batch); err != nil {
		return err
	}
	m.log.mu.Lock()
	m.log.sizes = append(m.log.sizes, len(batch))
	m.log.mu.Unlock()
	for _, f := range batch {
		if f.Face[0] == failValue {
			return errors.New("model exploded")
		}
	}
	for _, f := range batch {
		for j := range f.Out {
			f.Out[j] = f.Face[0]
		}
	}
	return nil
}

func (m *echoModel) Close() error { m.closed = true; return nil }

const size = 4

func newEcho(t *testing.T, maxBatch int, delay time.Duration) (*Executor, *runLog, *[]*echoModel) {
	t.Helper()
	log := &runLog{}
	var models []*echoModel
	e, err := New(Options{MaxBatch: maxBatch, MaxDelay: delay, Open: func(n int) (lipsync.Model, error) {
		m := &echoModel{shape: lipsync.Shape{FaceSize: size, MaxBatch: n, LookAhead: lipsync.WindowLookAhead}, log: log}
		models = append(models, m)
		return m, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, log, &models
}

func newFrame(sh lipsync.Shape, v float32) lipsync.Frame {
	f := lipsync.Frame{Mel: make([]float32, lipsync.MelLen), Face: make([]float32, sh.FaceLen()), Out: make([]float32, sh.OutLen())}
	f.Face[0] = v
	return f
}

func TestOptions(t *testing.T) {
	open := func(n int) (lipsync.Model, error) {
		return &echoModel{shape: lipsync.Shape{FaceSize: size, MaxBatch: n}, log: &runLog{}}, nil
	}
	for _, tc := range []struct {
		name string
		opts Options
		want string // "" for no error
	}{
		{"defaults", Options{Open: open}, ""},
		{"one", Options{Open: open, MaxBatch: 1}, ""},
		{"no open", Options{}, "Open is required"},
		{"batch too big", Options{Open: open, MaxBatch: 257}, "want 1..256"},
		{"negative delay", Options{Open: open, MaxDelay: -time.Millisecond}, "0..1s"},
		{"open fails", Options{Open: func(int) (lipsync.Model, error) { return nil, errors.New("no device") }}, "model of batch 1: no device"},
		{"small model", Options{Open: func(n int) (lipsync.Model, error) {
			return &echoModel{shape: lipsync.Shape{FaceSize: size, MaxBatch: 1}, log: &runLog{}}, nil
		}}, "model of batch 2 has shape"},
		{"sizes differ", Options{Open: func(n int) (lipsync.Model, error) {
			return &echoModel{shape: lipsync.Shape{FaceSize: n, MaxBatch: n}, log: &runLog{}}, nil
		}}, "want MaxBatch ≥ 2 and face size 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(tc.opts)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if sh := e.Shape(); sh.MaxBatch != 1 || sh.FaceSize != size {
					t.Errorf("Shape = %+v", sh)
				}
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestBatches: sessions submitting at once share runs, the models of
// batch 1, 2, 4 and 8 are opened and a partial batch runs on the smallest
// that holds it, and every session gets its own frame's output.
func TestBatches(t *testing.T) {
	e, log, models := newEcho(t, 8, 50*time.Millisecond)
	if len(*models) != 4 {
		t.Fatalf("%d models opened, want 4 (batch 1, 2, 4, 8)", len(*models))
	}
	const sessions, frames = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for s := range sessions {
		wg.Go(func() {
			m := e.Session()
			defer m.Close()
			for i := range frames {
				v := float32(s*1000 + i)
				f := newFrame(m.Shape(), v)
				if err := m.Run(context.Background(), []lipsync.Frame{f}); err != nil {
					errs <- err
					return
				}
				for _, o := range f.Out {
					if o != v {
						errs <- fmt.Errorf("session %d frame %d: output %v, want %v", s, i, o, v)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	total, biggest := 0, 0
	for _, n := range log.sizes {
		total += n
		biggest = max(biggest, n)
	}
	if total != sessions*frames || biggest < 2 || len(log.sizes) >= total {
		t.Fatalf("%d runs of %v frames (total %d), want %d frames in fewer runs, some batched", len(log.sizes), log.sizes, total, sessions*frames)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for i, m := range *models {
		if !m.closed {
			t.Errorf("model %d not closed", i)
		}
	}
}

// TestIsolation: a session's malformed frame fails only its own Run, a
// frame whose context ended is left out of its batch, and a failing batch
// fails its own frames only: the next batch runs.
func TestIsolation(t *testing.T) {
	e, _, _ := newEcho(t, 4, 20*time.Millisecond)
	good, bad, gone := e.Session(), e.Session(), e.Session()
	sh := e.Shape()
	var wg sync.WaitGroup
	var goodErr, badErr, goneErr error
	goodFrame := newFrame(sh, 3)
	badFrame := newFrame(sh, 3)
	badFrame.Face = badFrame.Face[:5]
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	wg.Go(func() { goodErr = good.Run(context.Background(), []lipsync.Frame{goodFrame}) })
	wg.Go(func() { badErr = bad.Run(context.Background(), []lipsync.Frame{badFrame}) })
	wg.Go(func() { goneErr = gone.Run(cancelled, []lipsync.Frame{newFrame(sh, 5)}) })
	wg.Wait()
	if goodErr != nil || goodFrame.Out[0] != 3 {
		t.Errorf("good session: %v, output %v", goodErr, goodFrame.Out[0])
	}
	if badErr == nil || !strings.Contains(badErr.Error(), "1280/5/48 mel/face/out") {
		t.Errorf("malformed frame: %v", badErr)
	}
	if !errors.Is(goneErr, context.Canceled) {
		t.Errorf("cancelled session: %v", goneErr)
	}

	// A batch the model fails: its frames fail, the next batch runs.
	boom := newFrame(sh, failValue)
	if err := bad.Run(context.Background(), []lipsync.Frame{boom}); err == nil || !strings.Contains(err.Error(), "model exploded") {
		t.Errorf("failing batch: %v", err)
	}
	after := newFrame(sh, 9)
	if err := good.Run(context.Background(), []lipsync.Frame{after}); err != nil || after.Out[0] != 9 {
		t.Errorf("after a failed batch: %v, output %v", err, after.Out[0])
	}
	// A closed handle refuses; the others go on.
	if err := bad.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bad.Run(context.Background(), []lipsync.Frame{newFrame(sh, 1)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Run on a closed handle: %v", err)
	}
	if err := good.Run(context.Background(), []lipsync.Frame{newFrame(sh, 1)}); err != nil {
		t.Errorf("Run beside a closed handle: %v", err)
	}
}

// TestClose: Close fails the frames waiting for their batch and every
// later Run, and stops the batcher (goleak).
func TestClose(t *testing.T) {
	e, _, _ := newEcho(t, 4, time.Second)
	s := e.Session()
	res := make(chan error, 1)
	go func() { res <- s.Run(context.Background(), []lipsync.Frame{newFrame(e.Shape(), 1)}) }()
	time.Sleep(20 * time.Millisecond) // queued, waiting up to a second for others
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("queued frame at Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a queued frame was not answered at Close")
	}
	if err := s.Run(context.Background(), []lipsync.Frame{newFrame(e.Shape(), 1)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
