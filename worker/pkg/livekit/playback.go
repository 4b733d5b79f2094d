package livekit

import (
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

// note is one playback notification for the agent.
type note struct {
	started     bool // lk.playback_started; else lk.playback_finished
	position    float64
	interrupted bool
}

// finishedPayload is lk.playback_finished's JSON.
type finishedPayload struct {
	PlaybackPosition float64 `json:"playback_position"`
	Interrupted      bool    `json:"interrupted"`
}

// segment is one of the agent's speech segments (one byte stream), in
// 16 kHz samples.
type segment struct {
	pushed, played int64
	closed         bool // the stream ended: nothing more is pushed
	started, done  bool // playback_started / playback_finished sent
}

// playback follows the agent's segments through the pipeline: pushes are
// marked, and each mark's samples count as played when the pipeline has
// written their last one to the transport (pipeline.PushPCMMarked).
type playback struct {
	mu     sync.Mutex
	notify func(note) // must not block
	segs   []*segment // not done, in order
	queued int64      // pushed, not yet played, of every segment
}

func newPlayback(notify func(note)) *playback { return &playback{notify: notify} }

func seconds(samples int64) float64 { return float64(samples) / pipeline.SampleRate }

// begin starts a segment.
func (p *playback) begin() *segment {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &segment{}
	p.segs = append(p.segs, s)
	return s
}

// pushed is what s has queued so far.
func (p *playback) pushed(s *segment) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.pushed
}

// ahead is the agent's audio queued and not yet played.
func (p *playback) ahead() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queued
}

// push queues pcm for s through pushFn, unless s was cleared (false). The
// lock is held across pushFn so that a clear cannot fall between the check
// and the queueing.
func (p *playback) push(s *segment, pcm []float32, pushFn func([]float32, func()) bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.done {
		return false
	}
	n := int64(len(pcm))
	s.pushed += n
	p.queued += n
	pushFn(pcm, func() { p.sent(s, n) })
	return true
}

// sent: n samples of s have been written to the transport.
func (p *playback) sent(s *segment, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queued = max(p.queued-n, 0)
	if s.done {
		return
	}
	s.played += n
	if !s.started {
		s.started = true
		p.notify(note{started: true})
	}
	if s.closed && s.played >= s.pushed {
		p.finishLocked(s, false)
	}
}

// close: s's stream ended.
func (p *playback) close(s *segment) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.closed = true
	if !s.done && s.played >= s.pushed {
		p.finishLocked(s, false)
	}
}

// clear finishes every segment not played yet as interrupted, calling
// interrupt (which drops the queued speech) under the lock; it reports
// whether there was one.
func (p *playback) clear(interrupt func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	interrupt()
	p.queued = 0
	any := len(p.segs) > 0
	for len(p.segs) > 0 {
		p.finishLocked(p.segs[0], true)
	}
	return any
}

func (p *playback) finishLocked(s *segment, interrupted bool) {
	s.done = true
	for i, x := range p.segs {
		if x == s {
			p.segs = append(p.segs[:i], p.segs[i+1:]...)
			break
		}
	}
	p.notify(note{position: seconds(s.played), interrupted: interrupted})
}

// enqueue hands a note to the notifier; a full queue drops it (logged).
func (a *Avatar) enqueue(n note) {
	select {
	case a.notes <- n:
	default:
		a.log.Warn("playback notification dropped: the agent does not answer fast enough", "started", n.started)
	}
}

// notifier calls the agent's playback RPCs in order until Close.
func (a *Avatar) notifier() {
	defer a.wg.Done()
	for {
		select {
		case <-a.ctx.Done():
			return
		case n := <-a.notes:
			a.call(n)
		}
	}
}

// call performs one playback RPC on the agent, with a few attempts.
func (a *Avatar) call(n note) {
	agent := a.agentIdentity()
	if agent == "" {
		a.log.Warn("playback notification before the agent was seen: dropped")
		return
	}
	params := lksdk.PerformRpcParams{DestinationIdentity: agent, Method: RPCPlaybackStarted, ResponseTimeout: &a.opt.RPCTimeout}
	if !n.started {
		b, _ := json.Marshal(finishedPayload{PlaybackPosition: n.position, Interrupted: n.interrupted})
		params.Method, params.Payload = RPCPlaybackFinished, string(b)
	}
	for attempt := 1; ; attempt++ {
		_, err := a.room.LocalParticipant.PerformRpc(params)
		if err == nil {
			return
		}
		var rerr *lksdk.RpcError
		if isRPCError(err, &rerr) && rerr.Code == lksdk.RpcUnsupportedMethod && n.started {
			return // the agent does not wait for playback_started
		}
		if attempt >= rpcAttempts || a.ctx.Err() != nil {
			a.log.Warn("playback RPC failed", "method", params.Method, "err", err)
			return
		}
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// onClearBuffer answers the agent's lk.clear_buffer.
func (a *Avatar) onClearBuffer(d lksdk.RpcInvocationData) (string, error) {
	if agent := a.lookupAgent(); agent == "" || d.CallerIdentity != agent {
		return "reject", nil
	}
	a.play.clear(a.opt.Hooks.Interrupt)
	return "ok", nil
}

func isRPCError(err error, target **lksdk.RpcError) bool {
	return errors.As(err, target)
}
