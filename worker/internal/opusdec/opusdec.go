// Package opusdec is a minimal libopus decoder binding for tests: it turns
// the packets of the worker's Opus encoder back into PCM so tests can check
// what a browser would hear. Nothing outside tests uses it.
//
// It links the system libopus through pkg-config (Debian libopus-dev).
package opusdec

// #cgo pkg-config: opus
// #include <opus.h>
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// MaxFrameSamples is the longest Opus frame per channel at 48 kHz (120 ms).
const MaxFrameSamples = 5760

// Decoder decodes one Opus stream. It is not safe for concurrent use.
type Decoder struct {
	dec      *C.OpusDecoder // allocated by libopus
	channels int
}

// New makes a decoder producing sampleRate Hz (8000, 12000, 16000, 24000 or
// 48000) with 1 or 2 channels.
func New(sampleRate, channels int) (*Decoder, error) {
	if channels != 1 && channels != 2 {
		return nil, fmt.Errorf("opusdec: %d channels", channels)
	}
	var rc C.int
	dec := C.opus_decoder_create(C.opus_int32(sampleRate), C.int(channels), &rc)
	if rc != C.OPUS_OK || dec == nil {
		return nil, fmt.Errorf("opusdec: create %d Hz, %d channels: %s", sampleRate, channels, C.GoString(C.opus_strerror(rc)))
	}
	return &Decoder{dec: dec, channels: channels}, nil
}

// Decode decodes pkt into pcm (interleaved) and returns the samples per
// channel written. pcm must hold the packet's whole duration, at most
// MaxFrameSamples·channels. An empty pkt runs packet-loss concealment for
// len(pcm)/channels samples.
func (d *Decoder) Decode(pkt []byte, pcm []int16) (int, error) {
	if d.dec == nil {
		return 0, errors.New("opusdec: decoder closed")
	}
	frames := len(pcm) / d.channels
	if frames == 0 {
		return 0, errors.New("opusdec: no room for samples")
	}
	var data *C.uchar
	if len(pkt) > 0 {
		data = (*C.uchar)(unsafe.Pointer(&pkt[0]))
	}
	n := C.opus_decode(d.dec, data, C.opus_int32(len(pkt)), (*C.opus_int16)(unsafe.Pointer(&pcm[0])), C.int(frames), 0)
	if n < 0 {
		return 0, fmt.Errorf("opusdec: decode %d bytes: %s", len(pkt), C.GoString(C.opus_strerror(n)))
	}
	return int(n), nil
}

// Close frees the decoder; Decode fails after it.
func (d *Decoder) Close() {
	if d.dec != nil {
		C.opus_decoder_destroy(d.dec)
		d.dec = nil
	}
}
