package capacity

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// fakeClock advances only when a fake runner runs: each call of batch b
// takes perFrame·b.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

type fakeOpener struct {
	clock    *fakeClock
	perFrame time.Duration
	fixed    int // 0: any batch
	failAt   int // batch whose Run fails
	runs     map[int]int
	open     int
	cancel   func() // called on the first run when set
}

func (o *fakeOpener) Open(b int) (Runner, error) {
	if o.fixed != 0 && b != o.fixed {
		return nil, ErrBatchUnsupported
	}
	o.open++
	return &fakeRunner{o: o, b: b}, nil
}

type fakeRunner struct {
	o *fakeOpener
	b int
}

func (r *fakeRunner) Run() error {
	if r.o.cancel != nil {
		r.o.cancel()
	}
	if r.b == r.o.failAt {
		return errors.New("model error")
	}
	r.o.runs[r.b]++
	r.o.clock.now = r.o.clock.now.Add(r.o.perFrame * time.Duration(r.b))
	return nil
}

func (r *fakeRunner) Close() error { r.o.open--; return nil }

func TestMeasure(t *testing.T) {
	for _, tc := range []struct {
		name     string
		perFrame time.Duration
		fixed    int
		opts     MeasureOptions
		batches  []int
		runs     map[int]int // warm-up included
	}{
		{"defaults", time.Millisecond, 0, MeasureOptions{}, []int{1, 2, 4, 8}, map[int]int{1: 22, 2: 22, 4: 22, 8: 22}},
		// 1 s per batch-1 frame, 4 s budget → 1 s per batch: one timed call each.
		{"slow model is bounded by the budget", time.Second, 0, MeasureOptions{}, []int{1, 2, 4, 8}, map[int]int{1: 3, 2: 3, 4: 3, 8: 3}},
		{"fixed batch", time.Millisecond, 4, MeasureOptions{Warmup: 1, Runs: 3}, []int{4}, map[int]int{4: 4}},
		{"own batches", time.Millisecond, 0, MeasureOptions{Batches: []int{1, 16}, Runs: 1, Warmup: -0}, []int{1, 16}, map[int]int{1: 3, 16: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Unix(1000, 0)}
			op := &fakeOpener{clock: clock, perFrame: tc.perFrame, fixed: tc.fixed, runs: map[int]int{}}
			tc.opts.Now = clock.Now
			m, err := Measure(context.Background(), op, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if op.open != 0 {
				t.Errorf("%d runners left open", op.open)
			}
			if len(m.Timing) != len(tc.batches) {
				t.Fatalf("timing %+v, want batches %v", m.Timing, tc.batches)
			}
			want := float64(tc.perFrame) / float64(time.Millisecond)
			for i, bt := range m.Timing {
				if bt.Batch != tc.batches[i] || bt.MSPerFrame != want {
					t.Errorf("timing[%d] = %+v, want batch %d at %v ms", i, bt, tc.batches[i], want)
				}
			}
			for b, n := range tc.runs {
				if op.runs[b] != n {
					t.Errorf("batch %d ran %d times, want %d", b, op.runs[b], n)
				}
			}
			if !m.MeasuredAt.Equal(time.Unix(1000, 0)) || m.Took <= 0 {
				t.Errorf("measured at %v, took %v", m.MeasuredAt, m.Took)
			}
		})
	}
}

func TestMeasureFails(t *testing.T) {
	clock := &fakeClock{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		op   *fakeOpener
		ctx  context.Context
		opts MeasureOptions
	}{
		{"run error", &fakeOpener{failAt: 2}, context.Background(), MeasureOptions{}},
		{"no batch fits", &fakeOpener{fixed: 3}, context.Background(), MeasureOptions{}},
		{"cancelled", &fakeOpener{cancel: cancel}, ctx, MeasureOptions{}},
		{"batch 0", &fakeOpener{}, context.Background(), MeasureOptions{Batches: []int{0}}},
		{"batch too big", &fakeOpener{}, context.Background(), MeasureOptions{Batches: []int{MaxBatch + 1}}},
		{"empty batches", &fakeOpener{}, context.Background(), MeasureOptions{Batches: []int{}}},
		{"negative runs", &fakeOpener{}, context.Background(), MeasureOptions{Runs: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.op.clock, tc.op.perFrame, tc.op.runs = clock, time.Millisecond, map[int]int{}
			tc.opts.Now = clock.Now
			if m, err := Measure(tc.ctx, tc.op, tc.opts); err == nil {
				t.Fatalf("Measure = %+v, nil error", m)
			}
			if tc.op.open != 0 {
				t.Errorf("%d runners left open", tc.op.open)
			}
		})
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("the cancelling runner never ran")
	}
}
