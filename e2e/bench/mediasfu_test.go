package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

// pacedSFU is a worker's test SFU that sends media: each viewer gets an
// Opus track fed a 20 ms packet every 20 ms while the session runs on the
// worker, and is closed (as a real SFU closes a room) once the session has
// stopped there. Viewers can thus measure when media stop and start again.
type pacedSFU struct {
	api *webrtc.API

	mu      sync.Mutex
	running func(session string) bool
	peers   map[string]*pacedPeer
	closed  bool
	wg      sync.WaitGroup
	stop    chan struct{}
}

type pacedPeer struct {
	session string
	pc      *webrtc.PeerConnection
	track   *webrtc.TrackLocalStaticSample

	mu          sync.Mutex
	connectedAt time.Time
}

var _ server.Signaling = (*pacedSFU)(nil)

// opusSilence is one 20 ms Opus frame of silence.
var opusSilence = []byte{0xf8, 0xff, 0xfe}

func newPacedSFU(t testing.TB) *pacedSFU {
	t.Helper()
	api, err := testfleet.NewLoopbackAPI()
	if err != nil {
		t.Fatal(err)
	}
	s := &pacedSFU{api: api, peers: map[string]*pacedPeer{}, stop: make(chan struct{})}
	s.wg.Go(s.pace)
	t.Cleanup(s.Close)
	return s
}

// setRunning tells the SFU which sessions run on its worker.
func (s *pacedSFU) setRunning(f func(session string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = f
}

// pace writes one packet to every live peer each 20 ms and closes the
// peers of sessions that stopped.
func (s *pacedSFU) pace() {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		running := s.running
		var gone []*pacedPeer
		live := make([]*pacedPeer, 0, len(s.peers))
		for id, p := range s.peers {
			if running != nil && !running(p.session) {
				gone = append(gone, p)
				delete(s.peers, id)
				continue
			}
			live = append(live, p)
		}
		s.mu.Unlock()
		for _, p := range gone {
			_ = p.pc.Close()
		}
		for _, p := range live {
			_ = p.track.WriteSample(media.Sample{Data: opusSilence, Duration: 20 * time.Millisecond})
		}
	}
}

func (s *pacedSFU) AddViewer(ctx context.Context, sessionID, offer string, _ server.ViewerLimits) (string, string, error) {
	s.mu.Lock()
	closed, running := s.closed, s.running
	s.mu.Unlock()
	if closed || (running != nil && !running(sessionID)) {
		return "", "", fmt.Errorf("no room for %s: %w", sessionID, server.ErrNoRoom)
	}
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", "", fmt.Errorf("new peer connection: %w", err)
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "avatar")
	if err != nil {
		_ = pc.Close()
		return "", "", err
	}
	if _, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		_ = pc.Close()
		return "", "", err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		_ = pc.Close()
		return "", "", fmt.Errorf("%w: %v", server.ErrInvalidSDP, err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		_ = pc.Close()
		return "", "", fmt.Errorf("%w: %v", server.ErrInvalidSDP, err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		_ = pc.Close()
		return "", "", err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		_ = pc.Close()
		return "", "", ctx.Err()
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "v_" + hex.EncodeToString(b[:])
	p := &pacedPeer{session: sessionID, pc: pc, track: track}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			p.mu.Lock()
			p.connectedAt = time.Now()
			p.mu.Unlock()
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = pc.Close()
		return "", "", fmt.Errorf("closed: %w", server.ErrNoRoom)
	}
	s.peers[id] = p
	return id, pc.LocalDescription().SDP, nil
}

func (s *pacedSFU) RemoveViewer(_ context.Context, sessionID, viewerID string) error {
	s.mu.Lock()
	p := s.peers[viewerID]
	if p != nil && p.session == sessionID {
		delete(s.peers, viewerID)
	} else {
		p = nil
	}
	s.mu.Unlock()
	if p != nil {
		return p.pc.Close()
	}
	return nil
}

func (s *pacedSFU) AddPublisher(context.Context, string, string) (string, string, error) {
	return "", "", errors.New("publishers are not supported by the test SFU")
}

func (s *pacedSFU) RemovePublisher(context.Context, string, string) error { return nil }

func (s *pacedSFU) Stats(sessionID string) (*fleetv1.SessionStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &fleetv1.SessionStats{}
	for id, p := range s.peers {
		if p.session != sessionID {
			continue
		}
		vs := &fleetv1.ViewerStats{Id: id, State: p.pc.ConnectionState().String()}
		p.mu.Lock()
		if !p.connectedAt.IsZero() {
			vs.ConnectedAt = timestamppb.New(p.connectedAt)
		}
		p.mu.Unlock()
		st.Viewers = append(st.Viewers, vs)
	}
	return st, nil
}

func (s *pacedSFU) ICEServers() []*fleetv1.IceServer { return nil }

// Close closes every peer and stops pacing.
func (s *pacedSFU) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	peers := s.peers
	s.peers = map[string]*pacedPeer{}
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	for _, p := range peers {
		_ = p.pc.Close()
	}
}
