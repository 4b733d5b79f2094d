// Package mediaruntime implements runtime.Runtime with one media pipeline
// (package pipeline) per session. Start opens the session's transport
// (Config.Media: the SFU room) and builds the session's pipeline on its GPU
// from a small pool of prewarmed inference contexts; speech requests are
// forwarded to it; a pipeline that fails (an encoder, inference or
// transport error, or a recovered panic) ends only its own session, which
// is reported on Ended with END_REASON_ERROR. Input is budgeted before it
// is allocated: each session's speech queue and pending text are bounded
// (package pipeline), and all sessions share Config.InputBudget; when
// input does not fit, or the live heap passes Config.HeapLimit, the
// session holding the most input is shed: it ends with END_REASON_ERROR
// and a message that says so, and the others go on. The runtime enforces the
// sessions' lifetimes (max duration, idle timeout, viewer gone) and reports
// those ends on Ended too. The transport is closed when the session ends,
// whatever ended it.
package mediaruntime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/idleloop"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync/batch"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/recording"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// Config configures a Runtime.
type Config struct {
	// Devices are the worker's GPUs and their slots.
	Devices []*fleetv1.GPU
	// Model is the ONNX lip-sync model; every session gets its own
	// context of it (lipsync.NewONNX) on its device. Required unless
	// OpenModel is set.
	Model *inference.Model
	// OpenModel, if set, makes a session's lip-sync model for a GPU in
	// place of Model, Device and IntraOpThreads: the one place another
	// model (a cross-session batcher, a test double) plugs in. The pools
	// prewarm and reuse what it returns as they do ONNX contexts.
	OpenModel func(gpu uint32) (lipsync.Model, error)
	// Device maps a GPU index to the inference device; nil runs every
	// session on the CPU.
	Device func(gpu uint32) inference.Device
	// IntraOpThreads per inference context; 0 means 1.
	IntraOpThreads int
	// BatchSessions, above 1, runs the sessions of each GPU through one
	// cross-session batching executor (package lipsync/batch) that runs up
	// to that many frames in one call of Model, instead of a context per
	// session; 0 or 1 gives each session its own context. Ignored when
	// OpenModel is set.
	BatchSessions int
	// BatchDelay bounds how long a frame waits for its batch to fill; 0
	// means batch.DefaultMaxDelay.
	BatchDelay time.Duration
	// Prewarm is the number of inference contexts made per GPU up front
	// (at most its slots); contexts are pooled up to the GPU's slots.
	Prewarm int
	// Avatar resolves a session's avatar name (required).
	Avatar func(name string) (*avatar.Pack, error)
	// TTS speaks the sessions' text.
	TTS tts.Synthesizer
	// Media opens a session's transport (required; NewDiscardMedia for a
	// worker without an SFU).
	Media NewMedia
	// Clock returns a session's media clock; nil means the real clock.
	Clock func(sess *fleetv1.Session) pipeline.Clock
	// Now is the clock of session lifetimes; nil means time.Now.
	Now func() time.Time
	// LifetimeClock paces the lifetime checks (every LifetimeCheckPeriod);
	// nil means the real clock. Tests pass a pipeline.ManualClock and Now.
	LifetimeClock pipeline.Clock
	// SpeakingBuffer is how many speaking changes (Speaking) wait for a
	// reader before further ones are dropped; 0 means DefaultSpeakingBuffer.
	SpeakingBuffer int
	// InputBudget bounds the input all sessions together buffer (queued
	// speech samples, text waiting for synthesis), in bytes; 0 means no
	// bound. Input that does not fit sheds the session holding the most
	// (see Runtime).
	InputBudget int64
	// HeapLimit, if above 0, is the live heap in bytes past which the
	// runtime sheds the session holding the most input, checked every
	// LifetimeCheckPeriod (the worker passes HeapShedPercent of its
	// memory limit).
	HeapLimit int64
	// NoIdleShare turns the shared idle loops off: every session encodes
	// its own idle frames. By default the runtime encodes each avatar's
	// idle loop once (package idleloop) and its idle sessions send that.
	NoIdleShare bool
	// IdleCacheBytes bounds the encoded frames of the shared idle loops;
	// 0 means idleloop.DefaultMaxBytes.
	IdleCacheBytes int64
	// Recordings, if set, is where session recordings are kept (package
	// recording); nil turns recording off. RecordingMaxBytes and
	// RecordingMaxDuration bound each recording (0: the package's
	// defaults).
	Recordings           recording.Store
	RecordingMaxBytes    int64
	RecordingMaxDuration time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Runtime runs one pipeline per session.
type Runtime struct {
	cfg      Config
	log      *slog.Logger
	slots    map[uint32]uint32
	pools    map[uint32]*pool
	batchers map[uint32]*batch.Executor // by GPU, with BatchSessions
	idle     *idleloop.Cache            // nil with NoIdleShare

	mu       sync.Mutex
	sessions map[string]*session
	starting map[string]chan struct{} // closed when that start finishes
	bySlot   map[[2]uint32]string
	closed   bool

	lifeClock pipeline.Clock
	metrics   *metrics
	budget    *pipeline.Budget
	heapLimit int64
	heap      func() int64 // the live heap; liveHeap, or a test's

	ended chan runtime.Ended
	// speaking carries the sessions' speaking changes; sends never block
	// (speakingDropped counts those that found it full).
	speaking        chan runtime.Speaking
	speakingDropped atomic.Uint64
	done            chan struct{}
	wg              sync.WaitGroup

	recMu sync.Mutex // after a session's mu
	recs  recordings
	// recEnded carries ended recordings (RecordingsEnded); sends never
	// block and stop once it is closed (recEndMu guards both).
	recEndMu     sync.Mutex
	recEnded     chan runtime.RecordingEnded
	recEndClosed bool
}

const endedBuffer = 64

var _ runtime.Runtime = (*Runtime)(nil)

// New prewarms the inference pools and returns a Runtime.
func New(cfg Config) (*Runtime, error) {
	if (cfg.Model == nil && cfg.OpenModel == nil) || cfg.Avatar == nil || cfg.Media == nil {
		return nil, errors.New("mediaruntime: Model (or OpenModel), Avatar and Media are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SpeakingBuffer <= 0 {
		cfg.SpeakingBuffer = DefaultSpeakingBuffer
	}
	if cfg.LifetimeClock == nil {
		cfg.LifetimeClock = pipeline.RealClock{}
	}
	r := &Runtime{cfg: cfg, log: cfg.Logger, slots: map[uint32]uint32{}, pools: map[uint32]*pool{}, batchers: map[uint32]*batch.Executor{},
		sessions: map[string]*session{}, starting: map[string]chan struct{}{}, bySlot: map[[2]uint32]string{},
		lifeClock: cfg.LifetimeClock, metrics: newMetrics(),
		budget: pipeline.NewBudget(cfg.InputBudget), heapLimit: cfg.HeapLimit, heap: liveHeap,
		ended: make(chan runtime.Ended, endedBuffer), speaking: make(chan runtime.Speaking, cfg.SpeakingBuffer),
		recEnded: make(chan runtime.RecordingEnded, recEndedBuffer),
		done:     make(chan struct{})}
	if !cfg.NoIdleShare {
		c, err := idleloop.New(idleloop.Options{MaxBytes: cfg.IdleCacheBytes, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("mediaruntime: %w", err)
		}
		r.idle = c
	}
	for _, d := range cfg.Devices {
		open, what, err := r.opener(d.GetIndex())
		if err != nil {
			return nil, errors.Join(fmt.Errorf("mediaruntime: GPU %d: %w", d.GetIndex(), err), r.closePools())
		}
		p, err := newPool(open, what, min(cfg.Prewarm, int(d.GetSlots())), int(d.GetSlots()))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("mediaruntime: GPU %d: %w", d.GetIndex(), err), r.closePools())
		}
		r.slots[d.GetIndex()], r.pools[d.GetIndex()] = d.GetSlots(), p
	}
	r.wg.Add(1)
	go r.watchLifetimes()
	return r, nil
}

func (r *Runtime) now() time.Time { return r.cfg.Now() }

// opener is how the pool of GPU gpu makes a model (Config.OpenModel, a
// handle on the GPU's batching executor, or an ONNX context of
// Config.Model), and the device's name for errors.
func (r *Runtime) opener(gpu uint32) (func() (lipsync.Model, error), string, error) {
	if open := r.cfg.OpenModel; open != nil {
		return func() (lipsync.Model, error) { return open(gpu) }, fmt.Sprintf("GPU %d", gpu), nil
	}
	dev := inference.CPU()
	if r.cfg.Device != nil {
		dev = r.cfg.Device(gpu)
	}
	opts := inference.ContextOptions{Batch: 1, IntraOpThreads: max(r.cfg.IntraOpThreads, 1), Device: dev}
	if r.cfg.BatchSessions <= 1 {
		return func() (lipsync.Model, error) { return lipsync.NewONNX(r.cfg.Model, opts) }, dev.String(), nil
	}
	e, err := batch.New(batch.Options{MaxBatch: r.cfg.BatchSessions, MaxDelay: r.cfg.BatchDelay,
		Open: func(n int) (lipsync.Model, error) {
			o := opts
			o.Batch = n
			return lipsync.NewONNX(r.cfg.Model, o)
		}})
	if err != nil {
		return nil, "", fmt.Errorf("batching executor on %s: %w", dev, err)
	}
	r.batchers[gpu] = e
	return func() (lipsync.Model, error) { return e.Session(), nil }, dev.String() + " (batched)", nil
}

// Start implements runtime.Runtime. The slot is reserved first and the
// pipeline built outside the lock (a pool miss creates an inference
// context, which takes a while); a retried Start of a session still
// starting waits for the first.
func (r *Runtime) Start(ctx context.Context, sess *fleetv1.Session) error {
	id, ref := sess.GetId(), [2]uint32{sess.GetGpu(), sess.GetSlot()}
	slots, ok := r.slots[ref[0]]
	if !ok || ref[1] >= slots {
		return fmt.Errorf("start %s: no GPU %d slot %d on this worker: %w", id, ref[0], ref[1], runtime.ErrInvalidInput)
	}
	for {
		wait, mine, err := r.reserve(id, ref)
		if err != nil || (wait == nil && !mine) {
			return err
		}
		if mine {
			break
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("start %s: waiting for a concurrent start: %w", id, ctx.Err())
		}
	}
	s, err := r.build(sess)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.wg.Done() // reserve's
	close(r.starting[id])
	delete(r.starting, id)
	if err == nil && r.closed {
		err = runtime.ErrClosed
		r.closeSession(s)
	}
	if err != nil {
		delete(r.bySlot, ref)
		return fmt.Errorf("start %s: %w", id, err)
	}
	r.sessions[id] = s
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	r.wg.Add(1)
	go r.run(runCtx, s)
	r.log.Info("session pipeline started", "session", id, "gpu", ref[0], "slot", ref[1])
	return nil
}

// reserve claims the slot for id. It returns mine when the caller now holds
// the reservation and must build the session, a channel that closes when a
// concurrent start of id finishes, or neither when id already runs there.
func (r *Runtime) reserve(id string, ref [2]uint32) (wait <-chan struct{}, mine bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false, fmt.Errorf("start %s: %w", id, runtime.ErrClosed)
	}
	if cur, ok := r.sessions[id]; ok {
		if cur.sess.GetGpu() != ref[0] || cur.sess.GetSlot() != ref[1] {
			return nil, false, fmt.Errorf("start %s: already running on GPU %d slot %d: %w", id, cur.sess.GetGpu(), cur.sess.GetSlot(), runtime.ErrInvalidInput)
		}
		return nil, false, nil // a retried start
	}
	if ch, ok := r.starting[id]; ok {
		return ch, false, nil
	}
	if other, ok := r.bySlot[ref]; ok {
		return nil, false, fmt.Errorf("start %s: GPU %d slot %d still held by %s: %w", id, ref[0], ref[1], other, runtime.ErrSlotBusy)
	}
	r.bySlot[ref] = id
	r.starting[id] = make(chan struct{})
	r.wg.Add(1) // Close waits for the build
	return nil, true, nil
}

// build opens a session's transport and makes its pipeline.
func (r *Runtime) build(sess *fleetv1.Session) (*session, error) {
	pack, err := r.cfg.Avatar(sess.GetAvatar())
	if err != nil {
		return nil, fmt.Errorf("avatar %q: %w: %w", sess.GetAvatar(), runtime.ErrInvalidInput, err)
	}
	begun := time.Now() // time to first frame, on the wall clock
	s := &session{sess: sess, exited: make(chan struct{})}
	s.idle, s.limit = lifetimes(sess)
	s.started = r.now()
	s.lastActive = s.started // before the hooks exist
	media, err := r.cfg.Media(sess, r.hooks(s))
	if err != nil {
		return nil, fmt.Errorf("media transport: %w", err)
	}
	s.media = media
	pl := r.pools[sess.GetGpu()]
	ic, err := pl.get()
	if err != nil {
		r.closeMedia(s)
		return nil, err
	}
	// The tee hands the samples to the session's recordings too.
	s.tee = recording.NewTee(r.metrics.timeFirstFrame(media, sess.GetGpu(), begun))
	opt := pipeline.Options{Avatar: pack, Model: ic, ReleaseModel: pl.put, TTS: r.cfg.TTS,
		Voice: sess.GetVoice(), Sink: s.tee, Logger: r.log.With("session", sess.GetId()),
		ObserveInference: r.metrics.observer(sess.GetGpu()), OnEvent: r.onSpeaking(sess), Budget: r.budget}
	opt.ObserveEncode, opt.ObserveLate, opt.ObserveSynthesis = r.metrics.observers(sess.GetGpu())
	if r.cfg.Clock != nil {
		opt.Clock = r.cfg.Clock(sess)
	}
	if r.idle != nil {
		opt.IdleVideo = r.idle.Acquire(pack, opt.VideoBitrate)
	}
	p, err := pipeline.New(opt)
	if err != nil {
		if opt.IdleVideo != nil {
			opt.IdleVideo.Release()
		}
		pl.put(ic)
		r.closeMedia(s)
		return nil, err
	}
	s.pl.Store(p)
	return s, nil
}

// closeSession releases a session's pipeline (encoders, inference context)
// and then its transport; its pipeline must have stopped.
func (r *Runtime) closeSession(s *session) {
	r.stopRecordings(s)
	if err := s.p().Close(); err != nil {
		r.log.Warn("closing a pipeline", "session", s.sess.GetId(), "err", err)
	}
	r.closeMedia(s)
}

func (r *Runtime) closeMedia(s *session) {
	if err := s.media.Close(); err != nil {
		r.log.Warn("closing a media transport", "session", s.sess.GetId(), "err", err)
	}
}

// run runs a session's pipeline; if it ends on its own the session is
// removed and reported on Ended.
func (r *Runtime) run(ctx context.Context, s *session) {
	defer r.wg.Done()
	err := s.p().Run(ctx)
	r.closeSession(s)
	close(s.exited)
	if ctx.Err() != nil {
		return // stopped
	}
	id := s.sess.GetId()
	r.mu.Lock()
	mine := r.sessions[id] == s
	if mine {
		r.removeLocked(id)
	}
	r.mu.Unlock()
	if !mine {
		return
	}
	if err == nil {
		err = errors.New("pipeline ended")
	}
	r.log.Error("session pipeline failed", "session", id, "err", err)
	select {
	case r.ended <- runtime.Ended{SessionID: id, State: fleetv1.SessionState_SESSION_STATE_FAILED,
		Reason: fleetv1.EndReason_END_REASON_ERROR, Message: err.Error()}:
	case <-r.done:
	}
}

func (r *Runtime) removeLocked(id string) *session {
	s, ok := r.sessions[id]
	if !ok {
		return nil
	}
	delete(r.sessions, id)
	delete(r.bySlot, [2]uint32{s.sess.GetGpu(), s.sess.GetSlot()})
	r.metrics.retire(s)
	return s
}

func (r *Runtime) get(id string) (*session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sessions[id]
	if !ok {
		return nil, fmt.Errorf("session %s: %w", id, runtime.ErrNotFound)
	}
	return s, nil
}
