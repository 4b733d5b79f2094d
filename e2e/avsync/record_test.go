//go:build linux

package avsync

import (
	"fmt"
	"image"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"gopkg.in/hraban/opus.v2"

	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"

	"github.com/avatarfleet/avatarfleet/e2e/internal/lipmeasure"
)

// frameRec is one decoded video frame: its RTP timestamp, arrival, and the
// luma of the mouth region.
type frameRec struct {
	ts    uint32
	at    time.Time
	mouth []float64
}

// audioRec is one Opus packet: RTP timestamp, sequence number, arrival and
// payload.
type audioRec struct {
	ts      uint32
	seq     uint16
	at      time.Time
	payload []byte
}

// srRec is one sender report.
type srRec struct {
	ntp uint64
	rtp uint32
}

// recorder keeps what the viewer got; its methods are whepviewer's
// callbacks.
type recorder struct {
	region image.Rectangle

	mu     sync.Mutex
	frames []frameRec
	audio  []audioRec
	srs    map[webrtc.RTPCodecType][]srRec
}

func newRecorder(region image.Rectangle) *recorder {
	return &recorder{region: region, srs: map[webrtc.RTPCodecType][]srRec{}}
}

func (r *recorder) options() whepviewer.Options {
	return whepviewer.Options{DecodeAll: true, OnFrame: r.frame, OnAudio: r.packet, OnSenderReport: r.report}
}

func (r *recorder) frame(f whepviewer.Frame) {
	m := lipmeasure.Luma(f.Image, r.region)
	r.mu.Lock()
	r.frames = append(r.frames, frameRec{ts: f.RTPTimestamp, at: f.Received, mouth: m})
	r.mu.Unlock()
}

func (r *recorder) packet(p *rtp.Packet, at time.Time) {
	rec := audioRec{ts: p.Timestamp, seq: p.SequenceNumber, at: at, payload: slices.Clone(p.Payload)}
	r.mu.Lock()
	r.audio = append(r.audio, rec)
	r.mu.Unlock()
}

func (r *recorder) report(kind webrtc.RTPCodecType, sr *rtcp.SenderReport, _ time.Time) {
	r.mu.Lock()
	r.srs[kind] = append(r.srs[kind], srRec{ntp: sr.NTPTime, rtp: sr.RTPTime})
	r.mu.Unlock()
}

// framesSince is a copy of the frames received so far from index i on.
func (r *recorder) framesSince(i int) []frameRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i >= len(r.frames) {
		return nil
	}
	return slices.Clone(r.frames[i:])
}

func (r *recorder) frameCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames)
}

// clockMap maps a track's RTP timestamps to the sender's NTP clock from
// its sender reports, as a browser's A/V sync does: t = rtp/rate + offset,
// offset the median over the reports (NTP seconds relative to base, so
// that float64 keeps microseconds).
type clockMap struct {
	rate   float64
	ref    uint32
	offset float64
}

func newClockMap(srs []srRec, rate float64, base uint64) (clockMap, error) {
	if len(srs) == 0 {
		return clockMap{}, fmt.Errorf("no sender reports")
	}
	c := clockMap{rate: rate, ref: srs[0].rtp}
	offs := make([]float64, len(srs))
	for i, sr := range srs {
		offs[i] = ntpSeconds(sr.ntp, base) - c.rel(sr.rtp)
	}
	slices.Sort(offs)
	c.offset = offs[len(offs)/2]
	return c, nil
}

func (c clockMap) rel(ts uint32) float64 { return float64(int32(ts-c.ref)) / c.rate }

// at is the sender time of an RTP timestamp, in seconds from base.
func (c clockMap) at(ts uint32) float64 { return c.rel(ts) + c.offset }

// ntpSeconds is an NTP timestamp in seconds after base's whole second.
func ntpSeconds(ntp, base uint64) float64 {
	return float64(int64(ntp>>32)-int64(base>>32)) + float64(ntp&0xffffffff)/(1<<32)
}

// energies decodes the Opus packets (in sequence order) and returns each
// packet's RMS (full scale 1).
func energies(pkts []audioRec) ([]float64, error) {
	dec, err := opus.NewDecoder(48000, 1)
	if err != nil {
		return nil, fmt.Errorf("opus decoder: %w", err)
	}
	pcm := make([]int16, 5760)
	out := make([]float64, len(pkts))
	for i, p := range pkts {
		n, err := dec.Decode(p.payload, pcm)
		if err != nil {
			return nil, fmt.Errorf("opus packet %d: %w", p.seq, err)
		}
		var sq float64
		for _, s := range pcm[:n] {
			sq += float64(s) * float64(s)
		}
		out[i] = math.Sqrt(sq/float64(max(n, 1))) / 32768
	}
	return out, nil
}
