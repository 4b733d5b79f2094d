package sfu

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// RoomOptions are a room's callbacks. Each may be nil.
type RoomOptions struct {
	// OnKeyframeRequest asks the encoder for a keyframe: a viewer sent a
	// PLI or FIR, or a new viewer is ready to receive. Requests are
	// rate-limited per room (Config.KeyframeInterval). It may be called from
	// several goroutines and must not block.
	OnKeyframeRequest func()
	// OnAudio receives a WHIP publisher's audio: Opus decoded to 16 kHz
	// mono float32 in [-1, 1], in order, from one goroutine per publisher.
	// Lost packets are concealed. The slice is the callee's. Blocking here
	// delays that publisher only.
	OnAudio func(pcm16k []float32)
	// OnViewersChanged reports the viewer count after a viewer joins or
	// leaves (removed, closed, ICE failed). Calls come in order from one
	// goroutine; a burst of changes may be reported once, with the last
	// count.
	OnViewersChanged func(n int)
}

// Sample is one encoded media unit: a VP8 frame or an Opus packet.
type Sample struct {
	Data     []byte
	Duration time.Duration
	// Keyframe marks a VP8 keyframe (counted in stats; viewers start
	// at a keyframe whatever this says, from the bitstream).
	Keyframe bool
}

// Room is one session's media: a VP8 and an Opus track, packetised once and
// sent to every viewer, and the session's WHIP publishers.
type Room struct {
	sfu  *SFU
	id   string
	opts RoomOptions
	log  *slog.Logger

	// One track per kind, shared by every viewer's PeerConnection: a
	// sample is packetised once and each packet written to each viewer's
	// binding (SRTP and the socket write are the only per-viewer work).
	video, audio *webrtc.TrackLocalStaticSample
	videoMu      sync.Mutex // one WriteVideo at a time: packets stay in order
	audioMu      sync.Mutex
	keyframes    *keyframeLimiter
	// videoCache holds the last video packets once for every viewer's
	// NACKs (nack.go); written under videoMu.
	videoCache packetCache

	videoFrames, videoKeyframes, videoBytes atomic.Uint64
	audioPackets, audioBytes                atomic.Uint64
	videoRate, audioRate                    rateMeter

	mu         sync.Mutex
	viewers    map[string]*viewer
	publishers map[string]*publisher
	closed     bool
	// departed sums the counters of viewers that left, so the SFU's
	// Prometheus counters never go down.
	departed viewerTotals

	wg      sync.WaitGroup // every goroutine the room's peers run
	changed chan struct{}  // viewer count changed (cap 1, coalescing)
	done    chan struct{}  // closed by Close
}

func newRoom(s *SFU, id string, opts RoomOptions) (*Room, error) {
	video, err := webrtc.NewTrackLocalStaticSample(vp8Capability(), "video", "avatarfleet-"+id)
	if err != nil {
		return nil, fmt.Errorf("sfu: room %s: video track: %w", id, err)
	}
	audio, err := webrtc.NewTrackLocalStaticSample(opusCapability(), "audio", "avatarfleet-"+id)
	if err != nil {
		return nil, fmt.Errorf("sfu: room %s: audio track: %w", id, err)
	}
	r := &Room{
		sfu: s, id: id, opts: opts, log: s.log.With("room", id),
		video: video, audio: audio,
		viewers:    make(map[string]*viewer),
		publishers: make(map[string]*publisher),
		changed:    make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	now := time.Now()
	r.videoRate.start(now)
	r.audioRate.start(now)
	r.keyframes = newKeyframeLimiter(s.cfg.KeyframeInterval, func() {
		if r.opts.OnKeyframeRequest != nil {
			r.opts.OnKeyframeRequest()
		}
	})
	r.wg.Add(1)
	go r.reportViewers()
	return r, nil
}

// ID is the room's id (the session's).
func (r *Room) ID() string { return r.id }

// WriteVideo sends one encoded VP8 frame to every viewer. It is packetised
// once; a slow or gone viewer never blocks it. It fails only once the room
// is closed.
func (r *Room) WriteVideo(s Sample) error {
	if r.isClosed() {
		return fmt.Errorf("sfu: room %s: write video: %w", r.id, ErrClosed)
	}
	r.videoMu.Lock()
	defer r.videoMu.Unlock()
	// Every packet to every viewer is queued, then sent by sendmmsg.
	r.sfu.batch.begin()
	defer r.sfu.batch.end()
	r.videoFrames.Add(1)
	r.videoBytes.Add(uint64(len(s.Data)))
	if s.Keyframe {
		r.videoKeyframes.Add(1)
	}
	if err := r.video.WriteSample(media.Sample{Data: s.Data, Duration: s.Duration}); err != nil {
		// Errors name the viewers whose binding failed (closing ones);
		// they are removed by their connection state, not here.
		r.log.Debug("sfu: video write to some viewers failed", "err", err)
	}
	return nil
}

// WriteAudio sends one Opus packet to every viewer, like WriteVideo.
func (r *Room) WriteAudio(s Sample) error {
	if r.isClosed() {
		return fmt.Errorf("sfu: room %s: write audio: %w", r.id, ErrClosed)
	}
	r.audioMu.Lock()
	defer r.audioMu.Unlock()
	r.sfu.batch.begin()
	defer r.sfu.batch.end()
	r.audioPackets.Add(1)
	r.audioBytes.Add(uint64(len(s.Data)))
	if err := r.audio.WriteSample(media.Sample{Data: s.Data, Duration: s.Duration}); err != nil {
		r.log.Debug("sfu: audio write to some viewers failed", "err", err)
	}
	return nil
}

// Viewers is the number of viewers (connecting or connected).
func (r *Room) Viewers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.viewers)
}

func (r *Room) isClosed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// goPeer runs f on a goroutine the room owns (Close waits for it). It
// returns false, without running f, once the room is closing.
func (r *Room) goPeer(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// viewersChanged wakes the reporter; it never blocks.
func (r *Room) viewersChanged() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// reportViewers calls OnViewersChanged, in order, from one goroutine.
func (r *Room) reportViewers() {
	defer r.wg.Done()
	last := 0
	for {
		select {
		case <-r.done:
			return
		case <-r.changed:
		}
		n := r.Viewers()
		if n != last && r.opts.OnViewersChanged != nil {
			r.opts.OnViewersChanged(n)
		}
		last = n
	}
}

// Close removes every viewer and publisher and waits for their goroutines;
// the SFU forgets the room. Further writes fail with ErrClosed.
func (r *Room) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	viewers, publishers := r.viewers, r.publishers
	for _, v := range viewers {
		r.departed.add(v)
	}
	r.viewers, r.publishers = map[string]*viewer{}, map[string]*publisher{}
	r.mu.Unlock()

	r.keyframes.close()
	var errs []error
	for _, v := range viewers {
		errs = append(errs, v.close())
	}
	for _, p := range publishers {
		errs = append(errs, p.close())
	}
	r.wg.Wait()
	r.sfu.forget(r)
	r.log.Debug("sfu: room closed")
	return errors.Join(errs...)
}
