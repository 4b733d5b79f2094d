// Package rooms joins a worker's sessions to its embedded SFU: each
// session's room is the transport of its media pipeline
// (mediaruntime.Media), and the rooms answer the worker's WHEP/WHIP
// signaling (server.Signaling). It only translates between the two sides;
// the SFU and the runtime keep their own state.
package rooms

import (
	"context"
	"errors"
	"fmt"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/sfu"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Rooms is the worker's view of its SFU.
type Rooms struct {
	sfu *sfu.SFU
}

// New returns Rooms over s; the caller keeps owning s (and closes it after
// the runtime has stopped every session).
func New(s *sfu.SFU) *Rooms { return &Rooms{sfu: s} }

var (
	_ server.Signaling      = (*Rooms)(nil)
	_ mediaruntime.NewMedia = (*Rooms)(nil).NewMedia
)

// NewMedia opens the session's room; it implements mediaruntime.NewMedia.
func (r *Rooms) NewMedia(sess *fleetv1.Session, hooks mediaruntime.MediaHooks) (mediaruntime.Media, error) {
	room, err := r.sfu.OpenRoom(sess.GetId(), sfu.RoomOptions{
		OnKeyframeRequest: hooks.RequestKeyframe,
		OnAudio:           hooks.PushPCM,
		OnViewersChanged:  hooks.ViewersChanged,
	})
	if err != nil {
		return nil, fmt.Errorf("open room of %s: %w", sess.GetId(), err)
	}
	return roomMedia{room}, nil
}

// roomMedia writes a pipeline's samples into its room.
type roomMedia struct{ room *sfu.Room }

func (m roomMedia) WriteVideo(s pipeline.Sample) error {
	return m.room.WriteVideo(sfu.Sample{Data: s.Data, Duration: s.Duration, Keyframe: s.Keyframe})
}

func (m roomMedia) WriteAudio(s pipeline.Sample) error {
	return m.room.WriteAudio(sfu.Sample{Data: s.Data, Duration: s.Duration})
}

func (m roomMedia) Close() error { return m.room.Close() }

func (r *Rooms) room(sessionID string) (*sfu.Room, error) {
	room, ok := r.sfu.Room(sessionID)
	if !ok {
		return nil, fmt.Errorf("session %s: %w", sessionID, server.ErrNoRoom)
	}
	return room, nil
}

// signalingError maps the SFU's errors onto the ones the gRPC service
// knows, keeping the message.
func signalingError(what, sessionID string, err error) error {
	switch {
	case errors.Is(err, sfu.ErrInvalidSDP):
		return fmt.Errorf("%s for %s: %w: %v", what, sessionID, server.ErrInvalidSDP, err)
	case errors.Is(err, sfu.ErrTooManyPending):
		return fmt.Errorf("%s for %s: %w: %v", what, sessionID, server.ErrTooManyPending, err)
	case errors.Is(err, sfu.ErrRoomFull):
		return fmt.Errorf("%s for %s: %w: %v", what, sessionID, server.ErrRoomFull, err)
	case errors.Is(err, sfu.ErrClosed):
		return fmt.Errorf("%s for %s: %w: %v", what, sessionID, server.ErrNoRoom, err)
	}
	return fmt.Errorf("%s for %s: %w", what, sessionID, err)
}

// AddViewer implements server.Signaling.
func (r *Rooms) AddViewer(ctx context.Context, sessionID, offer string, lim server.ViewerLimits) (string, string, error) {
	room, err := r.room(sessionID)
	if err != nil {
		return "", "", err
	}
	id, answer, err := room.AddViewerWith(ctx, offer, sfu.ViewerOptions{
		TokenID: lim.TokenID, MaxPending: lim.MaxPending, MaxPendingPerToken: lim.MaxPendingPerToken,
	})
	if err != nil {
		return "", "", signalingError("add viewer", sessionID, err)
	}
	return id, answer, nil
}

// RemoveViewer implements server.Signaling.
func (r *Rooms) RemoveViewer(_ context.Context, sessionID, viewerID string) error {
	room, ok := r.sfu.Room(sessionID)
	if !ok {
		return nil // the session ended: its viewers are gone with it
	}
	if err := room.RemoveViewer(viewerID); err != nil && !errors.Is(err, sfu.ErrClosed) {
		return signalingError("remove viewer", sessionID, err)
	}
	return nil
}

// AddPublisher implements server.Signaling.
func (r *Rooms) AddPublisher(ctx context.Context, sessionID, offer string) (string, string, error) {
	room, err := r.room(sessionID)
	if err != nil {
		return "", "", err
	}
	id, answer, err := room.AddPublisher(ctx, offer)
	if err != nil {
		return "", "", signalingError("add publisher", sessionID, err)
	}
	return id, answer, nil
}

// RemovePublisher implements server.Signaling.
func (r *Rooms) RemovePublisher(_ context.Context, sessionID, publisherID string) error {
	room, ok := r.sfu.Room(sessionID)
	if !ok {
		return nil
	}
	if err := room.RemovePublisher(publisherID); err != nil && !errors.Is(err, sfu.ErrClosed) {
		return signalingError("remove publisher", sessionID, err)
	}
	return nil
}

// Stats implements server.Signaling.
func (r *Rooms) Stats(sessionID string) (*fleetv1.SessionStats, error) {
	room, err := r.room(sessionID)
	if err != nil {
		return nil, err
	}
	return sessionStats(room.Stats()), nil
}

func sessionStats(st sfu.RoomStats) *fleetv1.SessionStats {
	out := &fleetv1.SessionStats{
		VideoFramesSent:    st.VideoFramesSent,
		VideoKeyframesSent: st.VideoKeyframesSent,
		AudioPacketsSent:   st.AudioPacketsSent,
		VideoBitrateBps:    st.VideoBitrateBps,
		AudioBitrateBps:    st.AudioBitrateBps,
		Publishers:         uint32(st.Publishers),
		Viewers:            make([]*fleetv1.ViewerStats, 0, len(st.Viewers)),
	}
	for _, v := range st.Viewers {
		vs := &fleetv1.ViewerStats{
			Id:            v.ID,
			State:         v.State,
			PacketsSent:   v.PacketsSent,
			BytesSent:     v.BytesSent,
			BitrateBps:    v.BitrateBps,
			NacksReceived: v.NACKsReceived,
			PlisReceived:  v.PLIsReceived,
			FirsReceived:  v.FIRsReceived,
			RttMs:         float64(v.RTT.Microseconds()) / 1000,
		}
		if !v.ConnectedAt.IsZero() {
			vs.ConnectedAt = timestamppb.New(v.ConnectedAt)
		}
		out.Viewers = append(out.Viewers, vs)
	}
	return out
}

// ICEServers implements server.Signaling.
func (r *Rooms) ICEServers() []*fleetv1.IceServer {
	return iceServers(r.sfu.ICEServers())
}

func iceServers(in []webrtc.ICEServer) []*fleetv1.IceServer {
	out := make([]*fleetv1.IceServer, 0, len(in))
	for _, s := range in {
		is := &fleetv1.IceServer{Urls: s.URLs, Username: s.Username}
		if c, ok := s.Credential.(string); ok {
			is.Credential = c
		}
		out = append(out, is)
	}
	return out
}
