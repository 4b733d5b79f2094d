package capacity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Runner runs one batched inference call of a fixed batch size.
type Runner interface {
	Run() error
	Close() error
}

// Opener opens a Runner for a batch size on the device being measured. It
// returns ErrBatchUnsupported for a batch the model cannot take (a model
// with a fixed batch).
type Opener interface {
	Open(batch int) (Runner, error)
}

// ErrBatchUnsupported marks a batch size the model does not take.
var ErrBatchUnsupported = errors.New("batch size not supported by the model")

// MeasureOptions bounds a measurement. The zero value is batches 1, 2, 4,
// 8, two warm-up calls, up to 20 timed calls per batch and 4 s in all.
type MeasureOptions struct {
	Batches []int
	// Warmup calls per batch, not timed.
	Warmup int
	// Runs is the most timed calls per batch; at least one always runs.
	Runs int
	// Budget bounds the whole measurement: each batch gets an equal
	// share for its timed calls (a slow model gets fewer of them).
	Budget time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Default measurement settings.
const (
	DefaultWarmup = 2
	DefaultRuns   = 20
	DefaultBudget = 4 * time.Second
	// MaxBatch bounds the batch sizes timed.
	MaxBatch = 64
)

// DefaultBatches are the batch sizes timed by default.
func DefaultBatches() []int { return []int{1, 2, 4, 8} }

// Measurement is the timing of one device.
type Measurement struct {
	Timing     []BatchTiming
	MeasuredAt time.Time
	Took       time.Duration
}

func (o MeasureOptions) withDefaults() (MeasureOptions, error) {
	if o.Batches == nil {
		o.Batches = DefaultBatches()
	}
	if o.Warmup == 0 {
		o.Warmup = DefaultWarmup
	}
	if o.Runs == 0 {
		o.Runs = DefaultRuns
	}
	if o.Budget == 0 {
		o.Budget = DefaultBudget
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.Batches) == 0 || o.Warmup < 0 || o.Runs < 1 || o.Budget < 0 {
		return o, fmt.Errorf("capacity: bad measure options (batches %v, warm-up %d, runs %d, budget %s)", o.Batches, o.Warmup, o.Runs, o.Budget)
	}
	for _, b := range o.Batches {
		if b < 1 || b > MaxBatch {
			return o, fmt.Errorf("capacity: batch %d: want 1..%d", b, MaxBatch)
		}
	}
	return o, nil
}

// Measure times the model behind open at each batch size: Warmup calls,
// then timed calls until Runs or the batch's share of Budget is spent
// (at least one), and reports the median call's time per frame. Batches
// the model rejects (ErrBatchUnsupported) are left out; any other error,
// or no batch at all, fails. It stops early when ctx ends.
func Measure(ctx context.Context, open Opener, opts MeasureOptions) (Measurement, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return Measurement{}, err
	}
	start := o.Now()
	share := o.Budget / time.Duration(len(o.Batches))
	var m Measurement
	for _, b := range o.Batches {
		if err := ctx.Err(); err != nil {
			return Measurement{}, fmt.Errorf("capacity: measure: %w", err)
		}
		ms, err := timeBatch(ctx, open, b, o, share)
		if errors.Is(err, ErrBatchUnsupported) {
			continue
		}
		if err != nil {
			return Measurement{}, fmt.Errorf("capacity: batch %d: %w", b, err)
		}
		m.Timing = append(m.Timing, BatchTiming{Batch: b, MSPerFrame: ms})
	}
	if len(m.Timing) == 0 {
		return Measurement{}, fmt.Errorf("capacity: the model takes none of the batch sizes %v", o.Batches)
	}
	m.MeasuredAt, m.Took = start, o.Now().Sub(start)
	return m, nil
}

// timeBatch returns the median ms per frame of batch b.
func timeBatch(ctx context.Context, open Opener, b int, o MeasureOptions, share time.Duration) (_ float64, err error) {
	r, err := open.Open(b)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := r.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	for range o.Warmup {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := r.Run(); err != nil {
			return 0, fmt.Errorf("warm-up: %w", err)
		}
	}
	var times []time.Duration
	began := o.Now()
	for len(times) < o.Runs && (len(times) == 0 || o.Now().Sub(began) < share) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		t0 := o.Now()
		if err := r.Run(); err != nil {
			return 0, fmt.Errorf("run: %w", err)
		}
		times = append(times, o.Now().Sub(t0))
	}
	return float64(median(times)) / float64(time.Millisecond) / float64(b), nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
