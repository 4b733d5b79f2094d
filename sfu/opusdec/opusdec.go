// Package opusdec turns the Opus RTP packets of one stream into PCM at the
// rate the caller asks for (libopus resamples internally), concealing lost
// packets with Opus in-band FEC and packet-loss concealment.
//
// A Decoder is fed packets in arrival order with their RTP sequence numbers.
// Packets that arrive late (behind one already decoded) or twice are dropped;
// a gap of up to MaxConcealed packets is filled (PLC for all but the last lost
// packet, in-band FEC from the next packet for the last one), so the output
// stays continuous in time. Longer gaps are not filled: after a long outage
// the stream resumes without a burst of synthetic audio.
package opusdec

import (
	"errors"
	"fmt"

	"gopkg.in/hraban/opus.v2"
)

// MaxConcealed is the longest run of lost packets a Decoder fills
// (100 ms of 20 ms packets).
const MaxConcealed = 5

// maxFrame is the longest Opus packet, 120 ms, in samples at 48 kHz.
const maxFrame = 5760

// Decoder decodes one Opus stream to mono float32 PCM. Not safe for
// concurrent use.
type Decoder struct {
	dec      *opus.Decoder
	rate     int
	started  bool
	next     uint16 // sequence number expected next
	frameLen int    // samples of the last decoded packet (size of a PLC frame)
	buf      []float32

	// Concealed counts the packets filled by PLC or FEC.
	Concealed uint64
	// Dropped counts late or duplicate packets.
	Dropped uint64
}

// New returns a Decoder producing mono PCM at sampleRate (8000, 12000,
// 16000, 24000 or 48000 Hz).
func New(sampleRate int) (*Decoder, error) {
	dec, err := opus.NewDecoder(sampleRate, 1)
	if err != nil {
		return nil, fmt.Errorf("opusdec: new decoder at %d Hz: %w", sampleRate, err)
	}
	return &Decoder{dec: dec, rate: sampleRate, frameLen: sampleRate / 50, buf: make([]float32, maxFrame*sampleRate/48000)}, nil
}

// Decode decodes the packet with RTP sequence number seq and calls emit with
// each PCM frame it yields, in order: concealment for lost packets first,
// then the packet itself. emit owns the slices it is given. A packet that
// does not decode is reported as an error; the stream goes on with the next.
func (d *Decoder) Decode(seq uint16, payload []byte, emit func(pcm []float32)) error {
	if d.started {
		gap := int16(seq - d.next)
		if gap < 0 {
			d.Dropped++
			return nil
		}
		if gap > 0 && gap <= MaxConcealed && len(payload) > 0 {
			d.conceal(int(gap), payload, emit)
		}
	}
	d.started = true
	d.next = seq + 1
	if len(payload) == 0 {
		return errors.New("opusdec: empty payload")
	}
	n, err := d.dec.DecodeFloat32(payload, d.buf)
	if err != nil {
		return fmt.Errorf("opusdec: decode packet %d (%d bytes): %w", seq, len(payload), err)
	}
	d.frameLen = n
	emit(clone(d.buf[:n]))
	return nil
}

// conceal fills lost packets before payload: PLC for each but the last,
// whose audio the next packet may carry as in-band FEC.
func (d *Decoder) conceal(lost int, payload []byte, emit func([]float32)) {
	for i := 0; i < lost; i++ {
		frame := d.buf[:d.frameLen]
		var err error
		if i == lost-1 {
			err = d.dec.DecodeFECFloat32(payload, frame)
		} else {
			err = d.dec.DecodePLCFloat32(frame)
		}
		if err != nil {
			// Nothing to conceal with (e.g. no FEC in the packet and
			// no history): fall back to silence of the right length.
			clear(frame)
		}
		d.Concealed++
		emit(clone(frame))
	}
}

func clone(s []float32) []float32 { return append([]float32(nil), s...) }
