package testfleet

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// PeerRole is what a test client peer does: watch (WHEP) or publish (WHIP).
type PeerRole int

const (
	// Viewer receives VP8 and Opus (a WHEP client).
	Viewer PeerRole = iota
	// Publisher sends one Opus track (a WHIP client).
	Publisher
)

// Peer is a browser stand-in: a real Pion peer on loopback (NewLoopbackAPI).
type Peer struct {
	// PC is the peer connection, closed when the test ends.
	PC        *webrtc.PeerConnection
	connected chan struct{}
}

// NewPeer makes a client peer in role and returns it with its offer, ICE
// gathering complete (the fleet does not take trickled candidates).
func NewPeer(t testing.TB, role PeerRole) (*Peer, string) {
	t.Helper()
	api, err := NewLoopbackAPI()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.GracefulClose() })
	p := &Peer{PC: pc, connected: make(chan struct{})}
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(p.connected) })
		}
	})
	switch role {
	case Publisher:
		mic, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "mic")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.AddTransceiverFromTrack(mic, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	default:
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
			if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				t.Fatal(err)
			}
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gathered:
	case <-time.After(20 * time.Second):
		t.Fatal("client ICE gathering did not complete")
	}
	return p, pc.LocalDescription().SDP
}

// Accept applies an answer, which must parse and carry ICE candidates, and
// waits until ICE and DTLS connect.
func (p *Peer) Accept(t testing.TB, answer string) {
	t.Helper()
	var parsed sdp.SessionDescription
	if err := parsed.UnmarshalString(answer); err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, answer)
	}
	if !strings.Contains(answer, "a=candidate:") {
		t.Fatalf("answer carries no ICE candidate (trickle is not supported):\n%s", answer)
	}
	if err := p.PC.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatalf("set answer: %v", err)
	}
	select {
	case <-p.connected:
	case <-time.After(20 * time.Second):
		t.Fatalf("client peer did not connect: %s", p.PC.ConnectionState())
	}
}
