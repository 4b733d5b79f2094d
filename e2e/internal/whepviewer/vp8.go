package whepviewer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"

	"github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/vpx"
	"github.com/pion/mediadevices/pkg/prop"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// assembler rebuilds VP8 frames from RTP packets (RFC 7741): a frame
// starts at a packet with S=1 and partition 0 and ends at the marker bit.
// A lost packet drops the frame it belongs to, and every frame after it
// until the next keyframe (the decoder could not use them).
type assembler struct {
	buf       []byte
	inFrame   bool
	haveSeq   bool
	lastSeq   uint16
	needKey   bool
	timestamp uint32
}

// push adds one packet; it returns a whole frame when pkt completes one.
// The returned slice is valid until the next push.
func (a *assembler) push(pkt *rtp.Packet) (frame []byte, ts uint32, ok bool) {
	if a.haveSeq && pkt.SequenceNumber != a.lastSeq+1 {
		a.inFrame, a.needKey = false, true
	}
	a.haveSeq, a.lastSeq = true, pkt.SequenceNumber
	var vp8 codecs.VP8Packet
	payload, err := vp8.Unmarshal(pkt.Payload)
	if err != nil || len(payload) == 0 {
		a.inFrame = false
		return nil, 0, false
	}
	if vp8.S == 1 && vp8.PID == 0 {
		a.buf, a.inFrame, a.timestamp = a.buf[:0], true, pkt.Timestamp
	}
	if !a.inFrame || pkt.Timestamp != a.timestamp {
		a.inFrame = false
		return nil, 0, false
	}
	a.buf = append(a.buf, payload...)
	if !pkt.Marker {
		return nil, 0, false
	}
	a.inFrame = false
	if a.needKey && !isKeyframe(a.buf) {
		return nil, 0, false
	}
	a.needKey = false
	return a.buf, a.timestamp, true
}

// isKeyframe reads the VP8 frame tag: bit 0 of the first byte is 0 for a
// key frame.
func isKeyframe(frame []byte) bool { return len(frame) >= 10 && frame[0]&1 == 0 }

// keyframeSize is the picture size in a key frame's header.
func keyframeSize(frame []byte) (w, h int) {
	return int(binary.LittleEndian.Uint16(frame[6:8]) & 0x3fff), int(binary.LittleEndian.Uint16(frame[8:10]) & 0x3fff)
}

// oneFrame is an io.Reader handing the decoder the frame it was given.
type oneFrame struct{ b []byte }

func (r *oneFrame) Read(p []byte) (int, error) {
	if r.b == nil {
		return 0, io.EOF
	}
	if len(r.b) > len(p) {
		return 0, io.ErrShortBuffer
	}
	n := copy(p, r.b)
	r.b = nil
	return n, nil
}

// decoder is libvpx's VP8 decoder, fed one whole frame at a time.
type decoder struct {
	src oneFrame
	dec codec.VideoDecoder
}

// decode decodes one frame; the first must be a key frame. A frame that
// shows no picture gives nil and no error.
func (d *decoder) decode(frame []byte) (*image.YCbCr, error) {
	if d.dec == nil {
		if !isKeyframe(frame) {
			return nil, errors.New("the first frame to decode is not a key frame")
		}
		w, h := keyframeSize(frame)
		dec, err := vpx.NewDecoder(&d.src, prop.Media{Video: prop.Video{Width: w, Height: h}})
		if err != nil {
			return nil, fmt.Errorf("new VP8 decoder: %w", err)
		}
		d.dec = dec
	}
	d.src.b = frame
	img, release, err := d.dec.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil // a frame that shows no picture
	}
	if err != nil {
		return nil, fmt.Errorf("decode VP8: %w", err)
	}
	defer release()
	y, ok := img.(*image.YCbCr)
	if !ok {
		return nil, fmt.Errorf("decoded a %T, want *image.YCbCr", img)
	}
	return y, nil
}

func (d *decoder) close() {
	if d.dec != nil {
		_ = d.dec.Close()
		d.dec = nil
	}
}
