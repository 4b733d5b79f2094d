package whepviewer

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
)

// vp8Packet is one RTP packet of a VP8 frame: a 1-byte payload descriptor
// (S set on the frame's first packet, partition 0) and the data.
func vp8Packet(seq uint16, ts uint32, start, marker bool, data []byte) *rtp.Packet {
	desc := byte(0)
	if start {
		desc = 0x10
	}
	return &rtp.Packet{
		Header:  rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: marker},
		Payload: append([]byte{desc}, data...),
	}
}

// keyData and interData are frame bodies with a key-frame and an
// inter-frame tag (bit 0 of the first byte).
var (
	keyData   = []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x02, 0x00, 0x02, 0xaa}
	interData = []byte{0x11, 0x02, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0xbb}
)

func TestAssembler(t *testing.T) {
	var a assembler
	// A key frame in two packets.
	if _, _, ok := a.push(vp8Packet(1, 100, true, false, keyData[:5])); ok {
		t.Fatal("a frame before its marker")
	}
	f, ts, ok := a.push(vp8Packet(2, 100, false, true, keyData[5:]))
	if !ok || ts != 100 || !bytes.Equal(f, keyData) || !isKeyframe(f) {
		t.Fatalf("key frame: %x %d %v", f, ts, ok)
	}
	if w, h := keyframeSize(f); w != 512 || h != 512 {
		t.Errorf("key frame size %dx%d, want 512x512", w, h)
	}
	// An inter frame in one packet.
	if f, _, ok := a.push(vp8Packet(3, 200, true, true, interData)); !ok || !bytes.Equal(f, interData) || isKeyframe(f) {
		t.Fatalf("inter frame: %x %v", f, ok)
	}
	// Packet 5 lost: frame 300 is incomplete and inter frames are dropped
	// until the next key frame.
	a.push(vp8Packet(4, 300, true, false, interData[:4]))
	if _, _, ok := a.push(vp8Packet(6, 300, false, true, interData[4:])); ok {
		t.Fatal("a frame with a lost packet was returned")
	}
	if _, _, ok := a.push(vp8Packet(7, 400, true, true, interData)); ok {
		t.Fatal("an inter frame after a loss was returned before a key frame")
	}
	if f, ts, ok := a.push(vp8Packet(8, 500, true, true, keyData)); !ok || ts != 500 || !isKeyframe(f) {
		t.Fatalf("the key frame after a loss: %v", ok)
	}
	// A packet of a frame that did not start here is not a frame.
	if _, _, ok := a.push(vp8Packet(9, 600, false, true, interData)); ok {
		t.Fatal("a frame without its start")
	}
}
