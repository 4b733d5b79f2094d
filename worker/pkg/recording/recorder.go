// Package recording writes what a session's viewers see to a WebM file
// (VP8 video and Opus audio) without re-encoding: a Recorder is fed the
// session's encoded samples through a Tee of the pipeline's Sink, starts at
// a keyframe, and muxes the samples as they are into SimpleBlocks
// (github.com/at-wat/ebml-go/webm) in a Store: a directory, or an
// S3-compatible bucket.
//
// A Recorder never slows the session down: the Tee hands it each sample
// without blocking (a bounded queue; when the store falls behind, samples
// are dropped and the recording picks up again at the next keyframe), and
// it never fails the session: a store error fails the recording only.
package recording

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/at-wat/ebml-go/mkvcore"
	"github.com/at-wat/ebml-go/webm"

	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// State is where a recording stands.
type State string

const (
	// Recording: samples are being written.
	Recording State = "recording"
	// Stopped: the file is complete and committed to the store.
	Stopped State = "stopped"
	// Failed: the file could not be written (Info.Error says why); nothing
	// was committed.
	Failed State = "failed"
)

const (
	// DefaultMaxBytes bounds a recording's file.
	DefaultMaxBytes = 4 << 30
	// DefaultMaxDuration bounds a recording's length (a session's own
	// longest lifetime).
	DefaultMaxDuration = 24 * time.Hour
	// DefaultQueue is how many samples wait for the store before new ones
	// are dropped: about 4 s of media (75 samples a second).
	DefaultQueue = 300
	// commitTimeout bounds the store's commit when a recording ends.
	commitTimeout = 2 * time.Minute
	// cuesReserved is the room kept at the front of a seekable file for
	// the seek index (downsampled by the muxer if it does not fit).
	cuesReserved = 64 << 10
)

// Track numbers in the file.
const (
	videoTrack = 1
	audioTrack = 2
)

// Options configures a Recorder.
type Options struct {
	// Store receives the file (required); Name is its object name
	// (required, see ValidName).
	Store Store
	Name  string
	// RequestKeyframe asks the session's encoder for a keyframe: the file
	// starts at one, and so does every resumption after a drop.
	RequestKeyframe func()
	// MaxBytes and MaxDuration end the recording (as Stopped, with
	// Info.Error saying which limit) when reached; 0 means the defaults.
	MaxBytes    int64
	MaxDuration time.Duration
	// Queue is the number of samples buffered for the store; 0 means
	// DefaultQueue.
	Queue int
	// Now is the wall clock of Info.Started and Info.Stopped; nil means
	// time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
	// OnDone, if set, is called once with the final Info when the
	// recording has ended, for whatever reason (Stop, a limit, a failure),
	// from the recorder's goroutine before Done closes. It must not block.
	OnDone func(Info)
}

// Validate checks the options.
func (o *Options) Validate() error {
	if o.Store == nil {
		return errors.New("recording: no store")
	}
	if err := ValidName(o.Name); err != nil {
		return err
	}
	if o.MaxBytes < 0 || o.MaxDuration < 0 || o.Queue < 0 {
		return fmt.Errorf("recording: negative limit (max bytes %d, max duration %v, queue %d)", o.MaxBytes, o.MaxDuration, o.Queue)
	}
	return nil
}

// Info describes a recording.
type Info struct {
	Name    string
	State   State
	Started time.Time
	// Stopped is zero while recording.
	Stopped time.Time
	// Bytes written to the store so far.
	Bytes int64
	// Duration is the media time recorded, from the first keyframe.
	Duration time.Duration
	// VideoFrames and AudioPackets written; Dropped samples (the store
	// fell behind, or before the first keyframe).
	VideoFrames, AudioPackets, Dropped uint64
	// Error says why a recording failed, or which limit stopped it.
	Error string
}

type item struct {
	s     pipeline.Sample
	video bool
}

// Recorder records one session's samples; see the package doc.
type Recorder struct {
	opt  Options
	obj  Object
	out  *output
	log  *slog.Logger
	done chan struct{}

	mu     sync.Mutex
	closed bool
	q      chan item
	info   Info
	// resync: drop samples until the next keyframe (the start, or after
	// an overflow).
	resync atomic.Bool
}

// Start creates the recording's object and starts writing it: samples
// arrive through WriteVideo and WriteAudio (or a Tee), from the next
// keyframe on, which Start asks for.
func Start(ctx context.Context, opt Options) (*Recorder, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if opt.MaxBytes == 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.MaxDuration == 0 {
		opt.MaxDuration = DefaultMaxDuration
	}
	if opt.Queue == 0 {
		opt.Queue = DefaultQueue
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	obj, err := opt.Store.Create(ctx, opt.Name)
	if err != nil {
		return nil, fmt.Errorf("recording %s: %w", opt.Name, err)
	}
	r := &Recorder{opt: opt, obj: obj, out: &output{obj: obj}, log: opt.Logger.With("recording", opt.Name),
		done: make(chan struct{}), q: make(chan item, opt.Queue),
		info: Info{Name: opt.Name, State: Recording, Started: opt.Now()}}
	r.resync.Store(true)
	go r.run()
	r.keyframe()
	return r, nil
}

func (r *Recorder) keyframe() {
	if r.opt.RequestKeyframe != nil {
		r.opt.RequestKeyframe()
	}
}

// WriteVideo implements pipeline.Sink; it never blocks and never fails.
func (r *Recorder) WriteVideo(s pipeline.Sample) error {
	r.enqueue(item{s: s, video: true})
	return nil
}

// WriteAudio implements pipeline.Sink; it never blocks and never fails.
func (r *Recorder) WriteAudio(s pipeline.Sample) error {
	r.enqueue(item{s: s})
	return nil
}

func (r *Recorder) enqueue(it item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.resync.Load() {
		if !it.video || !it.s.Keyframe {
			r.info.Dropped++
			return
		}
		r.resync.Store(false)
	}
	select {
	case r.q <- it:
	default:
		// The store fell behind: the frames after this one would refer
		// to it; resume at a keyframe.
		r.info.Dropped++
		r.resync.Store(true)
		r.log.Warn("recording fell behind: dropping until the next keyframe")
		r.keyframe()
	}
}

// closeQueue ends the input (idempotent).
func (r *Recorder) closeQueue() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.q)
	}
}

// Stop ends the recording and waits (until ctx ends) for the file to be
// finalised and committed; it returns the recording's final Info. Stop
// may be called more than once.
func (r *Recorder) Stop(ctx context.Context) (Info, error) {
	r.closeQueue()
	select {
	case <-r.done:
	case <-ctx.Done():
		return r.Info(), fmt.Errorf("recording %s: stop: %w", r.opt.Name, ctx.Err())
	}
	info := r.Info()
	if info.State == Failed {
		return info, fmt.Errorf("recording %s: %s", r.opt.Name, info.Error)
	}
	return info, nil
}

// Done is closed when the recording has ended (Stop, a limit, or a
// failure) and its file is committed or dropped.
func (r *Recorder) Done() <-chan struct{} { return r.done }

// Info reports the recording's state.
func (r *Recorder) Info() Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.info
	in.Bytes = r.out.n.Load()
	return in
}

// run muxes the queued samples, then finalises the file.
func (r *Recorder) run() {
	defer close(r.done)
	var (
		tracks []webm.BlockWriteCloser
		t0     int64  = -1
		why    string // a limit reached, or a failure
		failed bool
	)
	for it := range r.q {
		if why != "" {
			continue // drain after a limit or a failure
		}
		ms := it.s.Timestamp.Milliseconds()
		if t0 < 0 {
			w, h, ok := vp8Size(it.s.Data)
			if !it.video || !ok {
				continue
			}
			var err error
			if tracks, err = r.open(w, h); err != nil {
				why, failed = err.Error(), true
				r.closeQueue()
				continue
			}
			t0 = ms
		}
		rel := ms - t0
		if rel < 0 {
			continue
		}
		if d := time.Duration(rel) * time.Millisecond; d >= r.opt.MaxDuration || r.out.n.Load() >= r.opt.MaxBytes {
			why = fmt.Sprintf("limit reached (%v, %d bytes)", d, r.out.n.Load())
			r.closeQueue()
			continue
		}
		tw := tracks[1]
		if it.video {
			tw = tracks[0]
		}
		if _, err := tw.Write(it.s.Keyframe || !it.video, rel, it.s.Data); err != nil {
			why, failed = fmt.Sprintf("write: %v", err), true
			r.closeQueue()
			continue
		}
		r.mu.Lock()
		if it.video {
			r.info.VideoFrames++
		} else {
			r.info.AudioPackets++
		}
		r.info.Duration = max(r.info.Duration, time.Duration(rel)*time.Millisecond+it.s.Duration)
		r.mu.Unlock()
	}
	r.finish(tracks, why, failed)
	if r.opt.OnDone != nil {
		r.opt.OnDone(r.Info())
	}
}

// finish closes the muxer and commits (or aborts) the object.
func (r *Recorder) finish(tracks []webm.BlockWriteCloser, why string, failed bool) {
	for _, t := range tracks {
		_ = t.Close() // the last one returns once the muxer has written everything
	}
	if err := r.out.error(); err != nil && !failed {
		why, failed = err.Error(), true
	}
	if !failed && tracks == nil {
		why, failed = "no keyframe arrived", true
	}
	if failed {
		r.obj.Abort()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		err := r.obj.Commit(ctx)
		cancel()
		if err != nil {
			why, failed = err.Error(), true
		}
	}
	r.mu.Lock()
	r.info.State, r.info.Error, r.info.Stopped = Stopped, why, r.opt.Now()
	if failed {
		r.info.State = Failed
		r.log.Warn("recording failed", "err", why)
	}
	r.mu.Unlock()
}

// open starts the WebM file: its header and the two tracks.
func (r *Recorder) open(w, h int) ([]webm.BlockWriteCloser, error) {
	tracks := []webm.TrackEntry{
		{Name: "video", TrackNumber: videoTrack, TrackUID: videoTrack, CodecID: "V_VP8", TrackType: 1,
			DefaultDuration: uint64(pipeline.FrameDuration), Video: &webm.Video{PixelWidth: uint64(w), PixelHeight: uint64(h)}},
		{Name: "audio", TrackNumber: audioTrack, TrackUID: audioTrack, CodecID: "A_OPUS", TrackType: 2,
			CodecPrivate: opusHead(1, pipeline.SampleRate), SeekPreRoll: uint64(80 * time.Millisecond),
			Audio: &webm.Audio{SamplingFrequency: 48000, Channels: 1}},
	}
	opts := []mkvcore.BlockWriterOption{
		// Each file has its own Info: the muxer writes the duration into it.
		mkvcore.WithSegmentInfo(&webm.Info{TimecodeScale: uint64(time.Millisecond), MuxingApp: "avatarfleet", WritingApp: "avatarfleet worker"}),
		// The samples arrive in timestamp order across both tracks.
		mkvcore.WithBlockInterceptor(nil),
		mkvcore.WithMinMaxClusterDuration(videoTrack, 5000, 30000),
		mkvcore.WithOnFatalHandler(r.out.fail),
		mkvcore.WithOnErrorHandler(func(err error) { r.log.Warn("muxer", "err", err) }),
	}
	var dst interface {
		Write([]byte) (int, error)
		Close() error
	} = r.out
	if at, ok := r.obj.(writerAt); ok {
		// A seekable object gets a seek index and its duration.
		dst = &outputAt{output: r.out, at: at}
		opts = append(opts, mkvcore.WithSeekHead(true), mkvcore.WithCues(cuesReserved))
	}
	ws, err := webm.NewSimpleBlockWriter(dst, tracks, opts...)
	if err != nil {
		return nil, fmt.Errorf("start the WebM file: %w", err)
	}
	return ws, nil
}

// opusHead is the Opus identification header (RFC 7845 §5.1) a WebM Opus
// track carries as its CodecPrivate. Pre-skip is 0: a WebRTC viewer plays
// the decoder's output from its first sample too, so the file keeps the
// timing viewers saw.
func opusHead(channels int, inputRate uint32) []byte {
	b := make([]byte, 19)
	copy(b, "OpusHead")
	b[8] = 1
	b[9] = byte(channels)
	binary.LittleEndian.PutUint16(b[10:], 0)
	binary.LittleEndian.PutUint32(b[12:], inputRate)
	return b
}

// vp8Size reads the frame size from a VP8 keyframe (RFC 6386 §9.1); ok is
// false for anything else.
func vp8Size(b []byte) (w, h int, ok bool) {
	if len(b) < 10 || b[0]&1 != 0 || b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a {
		return 0, 0, false
	}
	w = int(binary.LittleEndian.Uint16(b[6:]) & 0x3fff)
	h = int(binary.LittleEndian.Uint16(b[8:]) & 0x3fff)
	return w, h, w > 0 && h > 0
}
