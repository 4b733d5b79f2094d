// Package livekit makes a session the avatar of a LiveKit Agents voice
// agent: it joins the agent's LiveKit room with the token the agent minted
// (kind agent, attribute lk.publish_on_behalf), publishes the session's VP8
// video and Opus audio there (an Avatar is a pipeline.Sink), and speaks the
// avatar side of livekit-agents' data-stream audio contract:
//
//   - the agent's speech arrives as byte streams on topic lk.audio_stream
//     (raw PCM s16le, attributes sample_rate and num_channels), one stream
//     per speech segment; it is resampled to 16 kHz mono and queued as
//     live speech;
//   - RPC lk.clear_buffer from the agent interrupts the speech;
//   - the avatar calls RPC lk.playback_started on the agent when a
//     segment's first audio has gone out, and lk.playback_finished with
//     {"playback_position": seconds, "interrupted": bool} when it was
//     played to its end or cleared.
//
// The room closing, the avatar being removed or the agent leaving end the
// session (Hooks.End). The connection's own state (joining, joined,
// reconnecting, left, with the count of reconnects and the last drop's
// reason) is kept from the room's callbacks for the session's status
// (Avatar.Status).
package livekit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/livekitroom"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	lkproto "github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// The contract's names (livekit-agents, voice/avatar).
const (
	AudioTopic          = "lk.audio_stream"
	RPCClearBuffer      = "lk.clear_buffer"
	RPCPlaybackStarted  = "lk.playback_started"
	RPCPlaybackFinished = "lk.playback_finished"
	AttrPublishOnBehalf = "lk.publish_on_behalf"
	AttrSampleRate      = "sample_rate"
	AttrNumChannels     = "num_channels"
)

// Defaults and limits.
const (
	defaultConnectTimeout  = 10 * time.Second
	defaultAgentWait       = 30 * time.Second
	defaultMaxLead         = 5 * time.Second
	defaultRPCTimeout      = 5 * time.Second
	defaultStreamIdle      = 10 * time.Second       // as livekit-agents' receiver
	supersededWait         = 200 * time.Millisecond // for the data of a stream with a successor
	notifyBuffer           = 64
	rpcAttempts            = 3
	maxSegment             = 10 * time.Minute // of audio, as the REST API's WAV limit
	minSampleRate          = 8000
	maxSampleRate          = 192000
	maxChannels            = 8
	firstChunkSamples      = 1 // the mark of a segment's first sample: playback_started
	pushChunk              = 320
	leadPoll               = 10 * time.Millisecond
	endReasonAgentLeft     = "the agent left the LiveKit room"
	endReasonRoomClosed    = "the LiveKit room closed or the avatar was disconnected"
	endReasonAgentNotFound = "no agent joined the LiveKit room"
	reasonConnectionLost   = "connection to the LiveKit server lost"
)

// Hooks are how the avatar drives its session. Each must be safe to call
// from any goroutine and must not block.
type Hooks struct {
	// PushSpeech queues 16 kHz mono speech; sent is called once its last
	// sample has gone out (never when an interrupt dropped it). It reports
	// whether all of it was queued.
	PushSpeech func(pcm []float32, sent func()) bool
	// Interrupt drops the queued speech.
	Interrupt func()
	// RequestKeyframe makes the next video frame a keyframe.
	RequestKeyframe func()
	// Present reports whether the agent is in the room (a viewer).
	Present func(bool)
	// End ends the session: the room closed, the avatar was removed or
	// the agent left. Called at most once.
	End func(message string)
}

// Options configure Join.
type Options struct {
	// URL and Token are where to join (Session.livekit).
	URL, Token string
	Hooks      Hooks
	// ConnectTimeout bounds the join (default 10 s); AgentWait how long
	// the agent may take to be in the room (default 30 s); MaxLead how far
	// the agent's audio is queued ahead of its playback (default 5 s);
	// RPCTimeout bounds each playback RPC (default 5 s); StreamIdleTimeout
	// ends a segment whose stream sends nothing more and no trailer
	// (default 10 s).
	ConnectTimeout, AgentWait, MaxLead, RPCTimeout, StreamIdleTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Avatar is a session's participant in a LiveKit room.
type Avatar struct {
	opt   Options
	log   *slog.Logger
	room  *lksdk.Room
	video *lksdk.LocalTrack
	audio *lksdk.LocalTrack

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the notifier, the agent wait, the stream readers
	play   *playback
	notes  chan note
	conn   *connState

	mu       sync.Mutex
	agent    string // the agent's identity, once known
	closed   bool
	ended    bool
	open     chan struct{} // closed when a stream newer than the one read arrives
	readMu   sync.Mutex    // one segment is read at a time, in arrival order
	writeErr bool          // a track write failed (logged once)
}

// Join connects to the room, publishes the tracks and registers the
// contract's handlers. The avatar stays until Close.
func Join(ctx context.Context, opt Options) (*Avatar, error) {
	if err := livekitroom.Validate(opt.URL, opt.Token); err != nil {
		return nil, fmt.Errorf("livekit: %w", err)
	}
	h := opt.Hooks
	if h.PushSpeech == nil || h.Interrupt == nil || h.End == nil {
		return nil, errors.New("livekit: Hooks.PushSpeech, Interrupt and End are required")
	}
	if opt.ConnectTimeout <= 0 {
		opt.ConnectTimeout = defaultConnectTimeout
	}
	if opt.AgentWait <= 0 {
		opt.AgentWait = defaultAgentWait
	}
	if opt.MaxLead <= 0 {
		opt.MaxLead = defaultMaxLead
	}
	if opt.RPCTimeout <= 0 {
		opt.RPCTimeout = defaultRPCTimeout
	}
	if opt.StreamIdleTimeout <= 0 {
		opt.StreamIdleTimeout = defaultStreamIdle
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Avatar{opt: opt, log: opt.Logger.With("livekit", opt.URL), notes: make(chan note, notifyBuffer), conn: newConnState()}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.play = newPlayback(a.enqueue)

	var err error
	keyframe := lksdk.WithRTCPHandler(func(p rtcp.Packet) {
		switch p.(type) {
		case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
			if h.RequestKeyframe != nil {
				h.RequestKeyframe()
			}
		}
	})
	if a.video, err = lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, keyframe); err != nil {
		a.cancel()
		return nil, fmt.Errorf("livekit: video track: %w", err)
	}
	if a.audio, err = lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}); err != nil {
		a.cancel()
		return nil, fmt.Errorf("livekit: audio track: %w", err)
	}

	cb := lksdk.NewRoomCallback()
	cb.OnReconnecting = func() {
		a.log.Warn("LiveKit connection lost, reconnecting")
		a.conn.apply(evReconnecting, reasonConnectionLost)
	}
	cb.OnReconnected = func() {
		a.conn.apply(evReconnected, "")
		a.log.Info("LiveKit connection back")
		a.agentAfterReconnect()
	}
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		a.conn.apply(evDisconnected, string(reason))
		if reason == lksdk.DuplicateIdentity {
			// Another worker joined with this token: the session moved
			// (a live migration, a re-placement). This one stops counting
			// the agent as a viewer and is stopped by the control plane,
			// or ends at its idle timeout.
			a.log.Info("replaced in the LiveKit room by another participant with the avatar's identity")
			a.presence(false)
			return
		}
		a.end(fmt.Sprintf("%s (%s)", endReasonRoomClosed, reason))
	}
	cb.OnParticipantConnected = func(rp *lksdk.RemoteParticipant) { a.participantJoined(rp) }
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) { a.participantLeft(rp) }
	a.room = lksdk.NewRoom(cb)
	// Handlers first: the agent may send as soon as it sees the avatar.
	if err := a.room.RegisterByteStreamHandler(AudioTopic, a.onAudioStream); err != nil {
		a.cancel()
		return nil, fmt.Errorf("livekit: %w", err)
	}
	if err := a.room.RegisterRpcMethod(RPCClearBuffer, a.onClearBuffer); err != nil {
		a.cancel()
		return nil, fmt.Errorf("livekit: %w", err)
	}
	jctx, cancel := context.WithTimeout(ctx, opt.ConnectTimeout)
	defer cancel()
	// The SDK's own log stays off: it may print the URL with the token.
	if err := a.room.JoinWithContextAndToken(jctx, opt.URL, opt.Token, lksdk.WithAutoSubscribe(false),
		lksdk.WithConnectTimeout(opt.ConnectTimeout), lksdk.WithLogger(protoLogger.GetDiscardLogger())); err != nil {
		a.conn.apply(evClosed, "")
		a.cancel()
		return nil, fmt.Errorf("livekit: join %s: %s", opt.URL, redact(err.Error(), opt.Token))
	}
	a.conn.apply(evJoined, "")
	if err := a.publish(); err != nil {
		a.conn.apply(evClosed, "")
		a.room.Disconnect()
		a.cancel()
		return nil, err
	}
	a.wg.Add(2)
	go a.notifier()
	go a.findAgent()
	a.log.Info("joined LiveKit room", "room", a.room.Name(), "identity", a.room.LocalParticipant.Identity())
	return a, nil
}

func (a *Avatar) publish() error {
	if _, err := a.room.LocalParticipant.PublishTrack(a.video, &lksdk.TrackPublicationOptions{
		Name: "avatar-video", Source: lkproto.TrackSource_CAMERA}); err != nil {
		return fmt.Errorf("livekit: publish video: %w", err)
	}
	if _, err := a.room.LocalParticipant.PublishTrack(a.audio, &lksdk.TrackPublicationOptions{
		Name: "avatar-audio", Source: lkproto.TrackSource_MICROPHONE}); err != nil {
		return fmt.Errorf("livekit: publish audio: %w", err)
	}
	return nil
}

// findAgent settles the agent's identity (see lookupAgent), and ends the
// session when no agent shows up in AgentWait.
func (a *Avatar) findAgent() {
	defer a.wg.Done()
	deadline := time.NewTimer(a.opt.AgentWait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for a.lookupAgent() == "" {
		select {
		case <-a.ctx.Done():
			return
		case <-deadline.C:
			a.end(endReasonAgentNotFound)
			return
		case <-tick.C:
		}
	}
}

// lookupAgent returns the agent's identity, looking for it in the room if
// it is not known yet: the participant named by the lk.publish_on_behalf
// attribute of the avatar's own token, else the room's first agent.
func (a *Avatar) lookupAgent() string {
	if id := a.agentIdentity(); id != "" {
		return id
	}
	for _, rp := range a.room.GetRemoteParticipants() {
		if a.isAgent(rp) {
			a.setAgent(rp.Identity())
			break
		}
	}
	return a.agentIdentity()
}

func (a *Avatar) isAgent(rp *lksdk.RemoteParticipant) bool {
	want := a.room.LocalParticipant.Attributes()[AttrPublishOnBehalf]
	return (want != "" && rp.Identity() == want) || (want == "" && rp.Kind() == lksdk.ParticipantAgent)
}

func (a *Avatar) participantJoined(rp *lksdk.RemoteParticipant) {
	if a.isAgent(rp) {
		a.setAgent(rp.Identity())
	}
}

func (a *Avatar) setAgent(id string) {
	a.mu.Lock()
	first := a.agent == ""
	if first {
		a.agent = id
	}
	a.mu.Unlock()
	if first {
		a.log.Info("agent found", "agent", id)
		a.presence(true)
	}
}

// participantLeft ends the session when the agent left. A restarting
// connection drops every participant it knew (the SDK reports each on its
// own goroutine, maybe after the connection is back): while it reconnects
// the agent only stops counting as a viewer, and whether it is still there
// is settled once it is back (agentAfterReconnect); an agent that is in
// the room again did not leave.
func (a *Avatar) participantLeft(rp *lksdk.RemoteParticipant) {
	id := a.agentIdentity()
	if id == "" || rp.Identity() != id || a.room.GetParticipantByIdentity(id) != nil {
		return
	}
	a.presence(false)
	if !a.conn.is(StateReconnecting) {
		a.end(endReasonAgentLeft)
	}
}

// agentAfterReconnect settles the agent's presence once the connection is
// back: still in the room, it counts as a viewer again; gone, the session
// ends as when it leaves.
func (a *Avatar) agentAfterReconnect() {
	id := a.agentIdentity()
	if id == "" {
		return // findAgent still looks for it
	}
	if a.room.GetParticipantByIdentity(id) == nil {
		a.presence(false)
		a.end(endReasonAgentLeft)
		return
	}
	a.presence(true)
}

// Status is the room connection's state; safe from any goroutine.
func (a *Avatar) Status() Status { return a.conn.get() }

// AgentIdentity is the agent's identity, once it was seen in the room.
func (a *Avatar) AgentIdentity() string { return a.agentIdentity() }

func (a *Avatar) agentIdentity() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agent
}

func (a *Avatar) presence(in bool) {
	if a.opt.Hooks.Present != nil {
		a.opt.Hooks.Present(in)
	}
}

// end ends the session once (not after Close: the session is ending).
func (a *Avatar) end(msg string) {
	a.mu.Lock()
	if a.closed || a.ended {
		a.mu.Unlock()
		return
	}
	a.ended = true
	a.mu.Unlock()
	a.log.Info("LiveKit avatar ends its session", "why", msg)
	a.opt.Hooks.End(msg)
}

// redact removes the token (and its signature, which a server may quote
// alone) from an error's text: errors end up in logs and in the session's
// end message.
func redact(msg, token string) string {
	msg = strings.ReplaceAll(msg, token, "[token]")
	if i := strings.LastIndexByte(token, '.'); i >= 0 && len(token)-i > 8 {
		msg = strings.ReplaceAll(msg, token[i+1:], "[signature]")
	}
	return msg
}

// WriteVideo implements pipeline.Sink.
func (a *Avatar) WriteVideo(s pipeline.Sample) error {
	a.write(a.video, s)
	return nil
}

// WriteAudio implements pipeline.Sink.
func (a *Avatar) WriteAudio(s pipeline.Sample) error {
	a.write(a.audio, s)
	return nil
}

// write hands a sample to a track. A failed write is logged once and never
// ends the session: the room's own events do.
func (a *Avatar) write(t *lksdk.LocalTrack, s pipeline.Sample) {
	if err := t.WriteSample(media.Sample{Data: s.Data, Duration: s.Duration}, nil); err != nil {
		a.mu.Lock()
		first := !a.writeErr
		a.writeErr = true
		a.mu.Unlock()
		if first {
			a.log.Warn("LiveKit track write failed", "err", err)
		}
	}
}

// Close leaves the room and waits for the avatar's goroutines. Pending
// playback notifications are dropped.
func (a *Avatar) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	a.conn.apply(evClosed, "")
	a.cancel()
	a.room.Disconnect() // ends the stream readers (their readers close)
	a.wg.Wait()
	return nil
}
