package codec

import (
	"image"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
)

// VP8SequenceEncoder encodes a fixed sequence of frames offline, as fast as
// the CPU allows, with the same libvpx settings as VP8Encoder; keyframes
// come only where Encode asks for one. Frames are stamped on a media clock
// (frame k at k/25 s), so the rate control budgets each as one 25 fps frame
// however fast they come. It is for one goroutine at a time.
type VP8SequenceEncoder struct {
	enc *vpxEncoder
}

// NewVP8SequenceEncoder starts a sequence encoder; opts as for
// NewVP8Encoder (KeyframeInterval is ignored: Encode says where keyframes
// go).
func NewVP8SequenceEncoder(opts VP8Options) (*VP8SequenceEncoder, error) {
	const what = "vp8 sequence"
	if err := checkVP8Options(what, &opts); err != nil {
		return nil, err
	}
	enc, err := newVPXEncoder(what, opts)
	if err != nil {
		return nil, err
	}
	return &VP8SequenceEncoder{enc: enc}, nil
}

// Encode encodes the next frame of the sequence, a keyframe if key, and
// returns its VP8 frame (newly allocated) and whether it is a keyframe.
func (e *VP8SequenceEncoder) Encode(f *frame.I420, key bool) ([]byte, bool, error) {
	return e.enc.encode(f, key)
}

// SetFocus moves the region of interest (VP8Options.Focus) from the next
// frame on.
func (e *VP8SequenceEncoder) SetFocus(r image.Rectangle) error { return e.enc.setFocus(r) }

// Close releases the encoder; Close again is a no-op.
func (e *VP8SequenceEncoder) Close() error {
	e.enc.close()
	return nil
}
