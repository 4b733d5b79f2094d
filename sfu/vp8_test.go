package sfu

import (
	"testing"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

func TestVP8KeyframeStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload []byte
		want    bool
	}{
		{"empty", nil, false},
		{"short descriptor", []byte{0x10}, false},
		{"key, 1-byte descriptor", []byte{0x10, 0x10}, true},
		{"delta, 1-byte descriptor", []byte{0x10, 0x11}, false},
		{"not a start", []byte{0x00, 0x10}, false},
		{"partition 1", []byte{0x11, 0x10}, false},
		{"key, 7-bit picture id", []byte{0x90, 0x80, 0x05, 0x10}, true},
		{"key, 15-bit picture id", []byte{0x90, 0x80, 0x85, 0x05, 0x10}, true},
		{"delta, 15-bit picture id", []byte{0x90, 0x80, 0x85, 0x05, 0x11}, false},
		{"key, all extensions", []byte{0x90, 0xf0, 0x85, 0x05, 0x01, 0x20, 0x10}, true},
		{"truncated extensions", []byte{0x90, 0xf0, 0x85}, false},
	} {
		if got := vp8KeyframeStart(tc.payload); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKeyframeGate: a viewer's video starts on the first keyframe the
// packetiser emits once the viewer is connected; nothing before it is sent
// or counted.
func TestKeyframeGate(t *testing.T) {
	s := newTestSFU(t, Config{})
	requested := 0
	room, err := s.OpenRoom("gate", RoomOptions{OnKeyframeRequest: func() { requested++ }})
	if err != nil {
		t.Fatal(err)
	}
	v := &viewer{id: "v", room: room, video: true}
	var sent []*rtp.Packet
	srtpReady := false // like Pion's writer before DTLS: drops, 0 bytes
	w := (&viewerInterceptor{v: v}).BindLocalStream(&interceptor.StreamInfo{MimeType: webrtc.MimeTypeVP8}, interceptor.RTPWriterFunc(
		func(h *rtp.Header, p []byte, _ interceptor.Attributes) (int, error) {
			if !srtpReady {
				return 0, nil
			}
			sent = append(sent, &rtp.Packet{Header: *h, Payload: p})
			return len(p), nil
		}))
	pay := &codecs.VP8Payloader{EnablePictureID: true}
	pz := rtp.NewPacketizer(1200, 96, 1, pay, rtp.NewRandomSequencer(), 90000)
	for i, key := range []bool{true, false, false, true, false} {
		if i == 1 {
			srtpReady = true
			v.onState(webrtc.PeerConnectionStateConnected)
		}
		for _, p := range pz.Packetize(vp8Frame(3000, key, i), 3600) {
			if _, err := w.Write(&p.Header, p.Payload, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(sent) != 6 || !vp8KeyframeStart(sent[0].Payload) {
		t.Fatalf("sent %d packets (first keyframe start: %v), want 6 from the keyframe on", len(sent), len(sent) > 0 && vp8KeyframeStart(sent[0].Payload))
	}
	if got := v.packets.Load(); got != 6 {
		t.Fatalf("counted %d packets, want 6", got)
	}
	if requested != 1 {
		t.Fatalf("connecting made %d keyframe requests, want 1", requested)
	}
}
