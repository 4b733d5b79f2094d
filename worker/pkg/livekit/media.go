package livekit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// MediaJoinTimeout bounds the join of a session's LiveKit room within its
// start (the control plane gives a start 10 s).
const MediaJoinTimeout = 8 * time.Second

// MediaOptions configure NewMedia.
type MediaOptions struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// AgentWait and MaxLead: see Options (0: their defaults).
	AgentWait, MaxLead time.Duration
}

// NewMedia wraps a worker's transport (the embedded SFU's rooms): a session
// whose record names a LiveKit room (Session.livekit) also joins it as its
// agent's avatar, and the pipeline's samples go to both. The agent being in
// the room counts as a viewer; its leaving, or the room closing, ends the
// session with END_REASON_VIEWER_GONE. A session without a LiveKit room
// gets next's transport alone.
func NewMedia(next mediaruntime.NewMedia, opt MediaOptions) mediaruntime.NewMedia {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	return func(sess *fleetv1.Session, hooks mediaruntime.MediaHooks) (mediaruntime.Media, error) {
		lk := sess.GetLivekit()
		if lk == nil {
			return next(sess, hooks)
		}
		v := &viewers{report: hooks.ViewersChanged}
		inner := hooks
		inner.ViewersChanged = v.room
		m, err := next(sess, inner)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), MediaJoinTimeout)
		defer cancel()
		av, err := Join(ctx, Options{
			URL: lk.GetUrl(), Token: lk.GetToken(),
			ConnectTimeout: MediaJoinTimeout, AgentWait: opt.AgentWait, MaxLead: opt.MaxLead,
			Logger: opt.Logger.With("session", sess.GetId()),
			Hooks: Hooks{
				PushSpeech:      hooks.PushSpeech,
				Interrupt:       hooks.Interrupt,
				RequestKeyframe: hooks.RequestKeyframe,
				Present:         v.agent,
				End: func(msg string) {
					hooks.End(fleetv1.EndReason_END_REASON_VIEWER_GONE, msg)
				},
			},
		})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("%w: %w", runtime.ErrRoomJoin, err), m.Close())
		}
		return &both{Media: m, av: av}, nil
	}
}

// both is a session's SFU room and its LiveKit avatar.
type both struct {
	mediaruntime.Media
	av *Avatar
}

// WriteVideo implements pipeline.Sink: the SFU room's errors end the
// session, the avatar's never do (see Avatar.write).
func (b *both) WriteVideo(s pipeline.Sample) error {
	err := b.Media.WriteVideo(s)
	_ = b.av.WriteVideo(s)
	return err
}

// WriteAudio implements pipeline.Sink.
func (b *both) WriteAudio(s pipeline.Sample) error {
	err := b.Media.WriteAudio(s)
	_ = b.av.WriteAudio(s)
	return err
}

// LiveKitStatus implements mediaruntime.LiveKitReporter: the room
// connection's live state for the session's status.
func (b *both) LiveKitStatus() *fleetv1.LiveKitStatus {
	st := b.av.Status()
	return &fleetv1.LiveKitStatus{State: st.State, Reconnects: st.Reconnects, LastError: st.LastError}
}

// Close leaves the LiveKit room, then closes the SFU room.
func (b *both) Close() error {
	return errors.Join(b.av.Close(), b.Media.Close())
}

// viewers adds the agent to the SFU room's viewer count.
type viewers struct {
	mu      sync.Mutex
	inRoom  int
	present bool
	report  func(int)
}

func (v *viewers) room(n int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.inRoom = n
	v.reportLocked()
}

func (v *viewers) agent(in bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.present = in
	v.reportLocked()
}

func (v *viewers) reportLocked() {
	n := v.inRoom
	if v.present {
		n++
	}
	if v.report != nil {
		v.report(n)
	}
}
