package testfleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

// NewLoopbackAPI returns a Pion API whose peers gather only host candidates
// on the loopback interface (UDP over IPv4, no mDNS): two peers in one test
// process connect without any network. Test clients use it too.
func NewLoopbackAPI() (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("register codecs: %w", err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)), nil
}

// PionAnswerer is a minimal test SFU: a real server.Signaling built on
// pion/webrtc for workers of a test fleet (WorkerSpec.Signaling). Each WHEP
// offer gets its own PeerConnection with a VP8 and an Opus
// TrackLocalStaticSample (silent: nothing is written to them, and nothing is
// fanned out between viewers — one peer per viewer); each WHIP offer gets a
// PeerConnection that drains the publisher's audio. It answers once ICE
// gathering has completed, so the answer carries every candidate, and ICE
// runs over loopback. It records removals so tests can see the control
// plane's DELETE reach the worker.
type PionAnswerer struct {
	api *webrtc.API
	ice []*fleetv1.IceServer

	mu      sync.Mutex
	peers   map[string]*pionPeer
	removed []string // "viewer/<id>" or "publisher/<id>", in order
	fail    error
	closed  bool
}

type pionPeer struct {
	session   string
	publisher bool
	pc        *webrtc.PeerConnection

	mu          sync.Mutex
	connectedAt time.Time
}

var _ server.Signaling = (*PionAnswerer)(nil)

// NewPionAnswerer returns an answerer that advertises iceServers to clients
// (Link headers; the answerer itself uses none) and closes its peers when
// the test ends.
func NewPionAnswerer(t testing.TB, iceServers ...*fleetv1.IceServer) *PionAnswerer {
	t.Helper()
	api, err := NewLoopbackAPI()
	if err != nil {
		t.Fatal(err)
	}
	a := &PionAnswerer{api: api, ice: iceServers, peers: map[string]*pionPeer{}}
	t.Cleanup(a.Close)
	return a
}

// FailWith makes every later AddViewer and AddPublisher fail with err (nil:
// answer again), as a worker's SFU refusing offers would.
func (a *PionAnswerer) FailWith(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail = err
}

// Removed lists the peers removed so far, as "viewer/<id>" or
// "publisher/<id>".
func (a *PionAnswerer) Removed() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.removed...)
}

// PeerState is the connection state of a peer ("" if unknown).
func (a *PionAnswerer) PeerState(id string) string {
	a.mu.Lock()
	p := a.peers[id]
	a.mu.Unlock()
	if p == nil {
		return ""
	}
	return p.pc.ConnectionState().String()
}

// AddViewer implements server.Signaling.
func (a *PionAnswerer) AddViewer(ctx context.Context, sessionID, offer string, _ server.ViewerLimits) (string, string, error) {
	return a.add(ctx, sessionID, offer, false)
}

// AddPublisher implements server.Signaling.
func (a *PionAnswerer) AddPublisher(ctx context.Context, sessionID, offer string) (string, string, error) {
	return a.add(ctx, sessionID, offer, true)
}

// RemoveViewer implements server.Signaling.
func (a *PionAnswerer) RemoveViewer(_ context.Context, sessionID, viewerID string) error {
	return a.remove(sessionID, viewerID, false)
}

// RemovePublisher implements server.Signaling.
func (a *PionAnswerer) RemovePublisher(_ context.Context, sessionID, publisherID string) error {
	return a.remove(sessionID, publisherID, true)
}

func (a *PionAnswerer) add(ctx context.Context, sessionID, offer string, publisher bool) (string, string, error) {
	a.mu.Lock()
	fail, closed := a.fail, a.closed
	a.mu.Unlock()
	if fail != nil {
		return "", "", fail
	}
	if closed {
		return "", "", fmt.Errorf("answerer closed: %w", server.ErrNoRoom)
	}
	pc, err := a.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", "", fmt.Errorf("new peer connection: %w", err)
	}
	answer, err := a.answer(ctx, pc, offer, publisher)
	if err != nil {
		_ = pc.GracefulClose()
		return "", "", err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	prefix := "v_"
	if publisher {
		prefix = "p_"
	}
	id := prefix + hex.EncodeToString(b[:])
	p := &pionPeer{session: sessionID, publisher: publisher, pc: pc}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			p.mu.Lock()
			p.connectedAt = time.Now()
			p.mu.Unlock()
		}
	})
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		_ = pc.GracefulClose()
		return "", "", fmt.Errorf("answerer closed: %w", server.ErrNoRoom)
	}
	a.peers[id] = p
	a.mu.Unlock()
	return id, answer, nil
}

func (a *PionAnswerer) answer(ctx context.Context, pc *webrtc.PeerConnection, offer string, publisher bool) (string, error) {
	if publisher {
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			buf := make([]byte, 1500)
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
			}
		})
	} else {
		video, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "avatar")
		if err != nil {
			return "", err
		}
		audio, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "avatar")
		if err != nil {
			return "", err
		}
		for _, tr := range []webrtc.TrackLocal{video, audio} {
			if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
				return "", fmt.Errorf("add track: %w", err)
			}
		}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %v", server.ErrInvalidSDP, err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: create answer: %v", server.ErrInvalidSDP, err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("gather candidates: %w", ctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}

func (a *PionAnswerer) remove(sessionID, id string, publisher bool) error {
	a.mu.Lock()
	p := a.peers[id]
	if p != nil && (p.session != sessionID || p.publisher != publisher) {
		p = nil // another session's or kind's peer: unknown here
	}
	if p != nil {
		delete(a.peers, id)
	}
	kind := "viewer/"
	if publisher {
		kind = "publisher/"
	}
	a.removed = append(a.removed, kind+id)
	a.mu.Unlock()
	if p != nil {
		if err := p.pc.GracefulClose(); err != nil {
			return fmt.Errorf("close peer %s: %w", id, err)
		}
	}
	return nil
}

// Stats implements server.Signaling: peer counts and states (the silent
// tracks send no media, so the media counters stay 0).
func (a *PionAnswerer) Stats(sessionID string) (*fleetv1.SessionStats, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := &fleetv1.SessionStats{}
	for id, p := range a.peers {
		if p.session != sessionID {
			continue
		}
		if p.publisher {
			st.Publishers++
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

// ICEServers implements server.Signaling.
func (a *PionAnswerer) ICEServers() []*fleetv1.IceServer { return a.ice }

// Close closes every peer; later offers are refused.
func (a *PionAnswerer) Close() {
	a.mu.Lock()
	peers := a.peers
	a.peers, a.closed = map[string]*pionPeer{}, true
	a.mu.Unlock()
	var errs []error
	for _, p := range peers {
		errs = append(errs, p.pc.GracefulClose())
	}
	_ = errors.Join(errs...)
}
