// Package batch is a cross-session batching executor for lip-sync models:
// the sessions on one device and model each get a lipsync.Model handle
// (Executor.Session) whose Run submits the session's frame to one batcher
// goroutine; the batcher runs up to MaxBatch queued frames in one call of
// the shared model, waiting at most MaxDelay after the first frame of a
// batch for others to join it.
//
// Sessions stay apart: a session's frame is checked against the shape
// before it is queued (a bad one fails only that session's Run), each
// frame's output is written only to its own session's buffer, a frame whose
// session's context ended before its batch ran is left out of it, and a
// session's Close touches no other session. A failure of the shared model
// itself fails the frames of that one batch, which is reported to each.
package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
)

// DefaultMaxDelay is how long the first frame of a batch waits for others
// by default: a tenth of a 25 fps frame.
const DefaultMaxDelay = 4 * time.Millisecond

// ErrClosed: the Executor (or the session's handle) was closed.
var ErrClosed = errors.New("batch: closed")

// Options configures an Executor.
type Options struct {
	// Open makes the shared model for batches of up to n frames (required).
	// The Executor opens one per power of two up to MaxBatch, so that a
	// partial batch runs on the smallest that holds it; each must report
	// MaxBatch ≥ n and the same face size.
	Open func(n int) (lipsync.Model, error)
	// MaxBatch is the most frames one run takes (1..256); 0 means 16.
	MaxBatch int
	// MaxDelay bounds how long a queued frame waits for a batch to fill;
	// 0 means DefaultMaxDelay.
	MaxDelay time.Duration
}

// Executor batches the frames of its sessions. Its batcher goroutine runs
// from New until Close.
type Executor struct {
	models   []lipsync.Model // ascending MaxBatch; the last holds maxBatch
	shape    lipsync.Shape   // what a session sees: MaxBatch 1
	maxBatch int
	maxDelay time.Duration

	reqs chan *request
	stop chan struct{}
	done chan struct{}
	once sync.Once
	err  error // Close's
}

type request struct {
	ctx   context.Context
	frame lipsync.Frame
	res   chan error // buffered 1
}

// New opens the shared models and starts the batcher.
func New(opts Options) (*Executor, error) {
	if opts.Open == nil {
		return nil, errors.New("batch: Open is required")
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 16
	}
	if opts.MaxBatch < 1 || opts.MaxBatch > 256 || opts.MaxDelay < 0 || opts.MaxDelay > time.Second {
		return nil, fmt.Errorf("batch: MaxBatch %d, MaxDelay %v: want 1..256 and 0..1s", opts.MaxBatch, opts.MaxDelay)
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	e := &Executor{maxBatch: opts.MaxBatch, maxDelay: opts.MaxDelay,
		reqs: make(chan *request), stop: make(chan struct{}), done: make(chan struct{})}
	for n := 1; ; n *= 2 {
		n = min(n, opts.MaxBatch)
		m, err := opts.Open(n)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("batch: model of batch %d: %w", n, err), e.closeModels())
		}
		e.models = append(e.models, m)
		sh := m.Shape()
		if sh.MaxBatch < n || len(e.models) > 1 && sh.FaceSize != e.shape.FaceSize {
			return nil, errors.Join(fmt.Errorf("batch: model of batch %d has shape %+v; want MaxBatch ≥ %d and face size %d", n, sh, n, e.shape.FaceSize), e.closeModels())
		}
		if len(e.models) == 1 {
			e.shape = lipsync.Shape{FaceSize: sh.FaceSize, MaxBatch: 1, LookAhead: sh.LookAhead, PasteChange: sh.PasteChange}
		}
		if n == opts.MaxBatch {
			break
		}
	}
	go e.loop()
	return e, nil
}

// Shape is what each session's handle reports: the shared model's face
// size and look-ahead, one frame per Run.
func (e *Executor) Shape() lipsync.Shape { return e.shape }

// Session returns a new session's handle. Closing it does not close the
// Executor.
func (e *Executor) Session() lipsync.Model {
	return &session{e: e, req: request{res: make(chan error, 1)}}
}

// Close stops the batcher, fails the frames still queued with ErrClosed,
// and closes the shared models. It is idempotent.
func (e *Executor) Close() error {
	e.once.Do(func() {
		close(e.stop)
		<-e.done
		e.err = e.closeModels()
	})
	return e.err
}

func (e *Executor) closeModels() error {
	var errs []error
	for _, m := range e.models {
		errs = append(errs, m.Close())
	}
	e.models = nil
	return errors.Join(errs...)
}

// submit queues r's frame and waits for its result. Once the batcher has
// taken the frame, submit waits for the batch even if ctx ends meanwhile:
// the batch writes into the frame's output.
func (e *Executor) submit(r *request) error {
	select {
	case e.reqs <- r:
	case <-r.ctx.Done():
		return fmt.Errorf("batch: queueing a frame: %w", r.ctx.Err())
	case <-e.done:
		return ErrClosed
	}
	return <-r.res
}

// loop is the batcher: it gathers up to maxBatch frames, waiting at most
// maxDelay after the first, and runs them.
func (e *Executor) loop() {
	defer close(e.done)
	pending := make([]*request, 0, e.maxBatch)
	frames := make([]lipsync.Frame, 0, e.maxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case r := <-e.reqs:
			pending = append(pending[:0], r)
		case <-e.stop:
			return
		}
		timer.Reset(e.maxDelay)
	fill:
		for len(pending) < e.maxBatch {
			select {
			case r := <-e.reqs:
				pending = append(pending, r)
			case <-timer.C:
				break fill
			case <-e.stop:
				for _, r := range pending {
					r.res <- ErrClosed
				}
				return
			}
		}
		timer.Stop()
		frames = e.run(pending, frames[:0])
		clear(pending)
	}
}

// run runs the pending frames whose sessions still want them and answers
// every request.
func (e *Executor) run(pending []*request, frames []lipsync.Frame) []lipsync.Frame {
	live := pending[:0] // filtered in place
	for _, r := range pending {
		if err := r.ctx.Err(); err != nil {
			r.res <- fmt.Errorf("batch: frame dropped before its batch ran: %w", err)
			continue
		}
		frames = append(frames, r.frame)
		live = append(live, r)
	}
	if len(frames) == 0 {
		return frames
	}
	i := slices.IndexFunc(e.models, func(m lipsync.Model) bool { return m.Shape().MaxBatch >= len(frames) })
	err := e.models[i].Run(context.Background(), frames)
	if err != nil {
		err = fmt.Errorf("batch: batch of %d frames: %w", len(frames), err)
	}
	for _, r := range live {
		r.res <- err
	}
	clear(frames)
	return frames
}

// session is one session's handle on the Executor. Its Runs are
// serialised, so one request (and its result channel) serves them all.
type session struct {
	e      *Executor
	mu     sync.Mutex
	req    request
	closed bool
}

func (s *session) Shape() lipsync.Shape { return s.e.shape }

// Run checks the session's frame and submits it.
func (s *session) Run(ctx context.Context, batch []lipsync.Frame) error {
	if err := lipsync.Check(s.e.shape, batch); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.req.ctx, s.req.frame = ctx, batch[0]
	err := s.e.submit(&s.req)
	s.req.ctx, s.req.frame = nil, lipsync.Frame{}
	return err
}

// Close waits for a Run in progress; later Runs fail with ErrClosed.
func (s *session) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}
