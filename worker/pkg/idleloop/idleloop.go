// Package idleloop encodes each avatar's idle loop once and shares the
// encoded VP8 frames among every idle session of that avatar.
//
// A session that is not speaking sends its avatar's idle loop, frame
// Index(t) at tick t, unchanged. Encoding it again in every session is
// most of what an idle session costs, so a Cache encodes one period of
// the loop per avatar and encoder settings (the avatar's pack and the
// video bitrate; the frame size, speed and other settings follow from
// them) with codec.VP8SequenceEncoder, in the background, and keeps the
// frames in memory. Position p of the loop is frame p of the sequence; the
// sequence has a keyframe at p = 0 and every KeyframeInterval frames after,
// and every other frame is a P-frame that refers only to the frames of the
// sequence since its last keyframe. A session may therefore start sending
// the shared frames only at a keyframe position, and must then send every
// following position in order (the pipeline does; see pipeline.IdleVideo);
// the RTP sequence numbers and timestamps are the session's own (its SFU
// room stamps each sample), so only the payload is shared.
//
// Memory is bounded: a loop is kept while some session holds it (Acquire
// to Release), evicted when the last one releases it, and the ready loops
// together hold at most Options.MaxBytes of encoded frames; a loop that
// would take them past it, or whose period is longer than MaxPeriod, is
// not shared (its sessions encode their own frames, as without a cache).
package idleloop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/codec"
)

const (
	// DefaultMaxBytes bounds the encoded frames all loops hold: a 512×512
	// loop of 98 frames at 1.5 Mbit/s is about 0.3 MB.
	DefaultMaxBytes = 256 << 20
	// DefaultKeyframeInterval is the loop's keyframe spacing, the same as
	// a session's own encoder (2 s): a session that stops speaking joins
	// the shared loop within that many frames.
	DefaultKeyframeInterval = codec.DefaultKeyframeInterval
	// MaxPeriod is the longest loop shared, in frames (2 minutes at 25
	// fps).
	MaxPeriod = 3000
)

// Options configures a Cache.
type Options struct {
	// MaxBytes bounds the encoded frames of all loops; 0 means
	// DefaultMaxBytes.
	MaxBytes int64
	// KeyframeInterval is the frames between the loop's keyframes; 0
	// means DefaultKeyframeInterval.
	KeyframeInterval int
	// Logger; nil discards.
	Logger *slog.Logger
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.MaxBytes < 0 {
		return fmt.Errorf("idleloop: max bytes %d is negative", o.MaxBytes)
	}
	if o.KeyframeInterval < 0 || o.KeyframeInterval > MaxPeriod {
		return fmt.Errorf("idleloop: keyframe interval %d out of 0..%d", o.KeyframeInterval, MaxPeriod)
	}
	return nil
}

// Cache holds the shared idle loops. It is safe for concurrent use.
type Cache struct {
	opt    Options
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the encoding goroutines

	mu     sync.Mutex
	loops  map[key]*loop
	bytes  int64 // the frames of the ready loops
	closed bool

	encodes, encoded atomic.Uint64
}

type key struct {
	pack    *avatar.Pack
	bitrate int
}

// loop is one avatar's shared loop.
type loop struct {
	c      *Cache
	key    key
	refs   int // under c.mu
	cancel context.CancelFunc
	// frames and keys are written by the encoding goroutine before ready
	// is set, and only read after.
	ready  atomic.Bool
	frames [][]byte
	keys   []bool
	bytes  int64
}

// New returns an empty cache; Close stops its encoding.
func New(opt Options) (*Cache, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if opt.MaxBytes == 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.KeyframeInterval == 0 {
		opt.KeyframeInterval = DefaultKeyframeInterval
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cache{opt: opt, log: opt.Logger, ctx: ctx, cancel: cancel, loops: map[key]*loop{}}, nil
}

// Handle is one session's hold on a shared loop; it implements
// pipeline.IdleVideo.
type Handle struct {
	l    *loop
	once sync.Once
}

// Acquire returns the shared loop of pack at bitrate (bit/s; 0 for the
// codec's default), starting its encoding if no session holds it yet. The
// loop's frames are ready some time later (Frame says so); Release gives
// the hold back. After Close it returns a handle whose loop never gets
// ready.
func (c *Cache) Acquire(pack *avatar.Pack, bitrate int) *Handle {
	if bitrate == 0 {
		bitrate = codec.DefaultVP8Bitrate
	}
	k := key{pack: pack, bitrate: bitrate}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.loops[k]; ok {
		l.refs++
		return &Handle{l: l}
	}
	l := &loop{c: c, key: k, refs: 1}
	if c.closed {
		return &Handle{l: l}
	}
	c.loops[k] = l
	ctx, cancel := context.WithCancel(c.ctx)
	l.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		c.encode(ctx, l)
	}()
	return &Handle{l: l}
}

// Frame returns the shared frame of tick t (t ≥ 0) and whether it is a
// keyframe; ok is false while the loop is not ready (or not shared). The
// frame is shared by every session: read it, never modify it.
func (h *Handle) Frame(t int64) (data []byte, keyframe, ok bool) {
	l := h.l
	if t < 0 || !l.ready.Load() {
		return nil, false, false
	}
	p := int(t % int64(len(l.frames)))
	return l.frames[p], l.keys[p], true
}

// Release gives the hold back; the last one evicts the loop. Release
// again is a no-op.
func (h *Handle) Release() {
	h.once.Do(func() {
		l := h.l
		c := l.c
		c.mu.Lock()
		defer c.mu.Unlock()
		l.refs--
		if l.refs > 0 || c.loops[l.key] != l {
			return
		}
		delete(c.loops, l.key)
		if l.cancel != nil {
			l.cancel()
		}
		if l.ready.Load() {
			c.bytes -= l.bytes
		}
	})
}

// encode encodes one period of l's loop and publishes it, if it fits.
func (c *Cache) encode(ctx context.Context, l *loop) {
	pack, period := l.key.pack, l.key.pack.Period()
	log := c.log.With("avatar", pack.Name(), "bitrate", l.key.bitrate, "frames", period)
	if period > MaxPeriod {
		log.Warn("idle loop too long to share: its sessions encode their own frames", "max", MaxPeriod)
		return
	}
	c.encodes.Add(1)
	frames, keys, size, err := c.encodeFrames(ctx, pack, l.key.bitrate, period)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			log.Warn("encoding the shared idle loop failed: its sessions encode their own frames", "err", err)
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loops[l.key] != l {
		return // evicted meanwhile
	}
	if c.bytes+size > c.opt.MaxBytes {
		log.Warn("idle loop cache full: this loop is not shared", "bytes", size, "held", c.bytes, "max", c.opt.MaxBytes)
		return
	}
	l.frames, l.keys, l.bytes = frames, keys, size
	c.bytes += size
	l.ready.Store(true)
	log.Debug("idle loop shared", "bytes", size)
}

func (c *Cache) encodeFrames(ctx context.Context, pack *avatar.Pack, bitrate, period int) ([][]byte, []bool, int64, error) {
	enc, err := codec.NewVP8SequenceEncoder(codec.VP8Options{Width: pack.Width(), Height: pack.Height(), Bitrate: bitrate})
	if err != nil {
		return nil, nil, 0, err
	}
	defer enc.Close()
	frames, keys := make([][]byte, period), make([]bool, period)
	var size int64
	for p := range period {
		if err := ctx.Err(); err != nil {
			return nil, nil, 0, err
		}
		img, box := pack.Frame(p)
		want := p%c.opt.KeyframeInterval == 0
		if err := enc.SetFocus(box); err != nil { // the face, as a session's own encoder has it
			return nil, nil, 0, err
		}
		pkt, key, err := enc.Encode(img, want)
		if err != nil {
			return nil, nil, 0, err
		}
		if key != want {
			return nil, nil, 0, fmt.Errorf("idleloop: frame %d: keyframe %v, asked %v", p, key, want)
		}
		c.encoded.Add(1)
		frames[p], keys[p] = pkt, key
		size += int64(len(pkt))
	}
	return frames, keys, size, nil
}

// Stats is a snapshot of the cache.
type Stats struct {
	// Loops is the loops held (ready or being encoded); Ready those
	// ready; Bytes their encoded frames.
	Loops, Ready int
	Bytes        int64
	// Encodes counts the loop encodings started, EncodedFrames the frames
	// they encoded.
	Encodes, EncodedFrames uint64
}

// Stats reports the cache's state.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Loops: len(c.loops), Bytes: c.bytes, Encodes: c.encodes.Load(), EncodedFrames: c.encoded.Load()}
	for _, l := range c.loops {
		if l.ready.Load() {
			s.Ready++
		}
	}
	return s
}

// Close stops the encodings in flight and waits for them; loops already
// shared stay readable by their holders. Idempotent.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}
