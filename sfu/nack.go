package sfu

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// nackCacheSize is the number of packets a room keeps per stream for NACKs:
// about 4 s of a 2 Mbit/s stream. A power of two.
const nackCacheSize = 1024

// packetCache is a room's ring of the last nackCacheSize RTP packets of one
// track, kept once for all the viewers. Every viewer's binding of the track
// gets the same packets with the same sequence numbers and timestamps (one
// packetizer per track): only SSRC and payload type differ, and those are
// rewritten per viewer on a retransmission. So the first viewer binding that
// writes a packet stores it and the others find it there.
//
// Writes come from the track's writer only (Room.WriteVideo, serialised by
// the room), so the writer reads slots without the lock; it takes the lock
// to change a slot. NACK responders read under the read lock.
type packetCache struct {
	mu    sync.RWMutex
	slots [nackCacheSize]cachedPacket
}

type cachedPacket struct {
	valid   bool
	header  rtp.Header // SSRC and payload type of the binding that stored it
	payload []byte     // reused: grows to the largest payload once
}

// put stores the packet unless it is already there. Writer goroutine only.
func (c *packetCache) put(h *rtp.Header, payload []byte) {
	s := &c.slots[h.SequenceNumber%nackCacheSize]
	if s.valid && s.header.SequenceNumber == h.SequenceNumber && s.header.Timestamp == h.Timestamp {
		return // another viewer's binding stored it
	}
	c.mu.Lock()
	s.valid = true
	copyHeader(&s.header, h)
	s.payload = append(s.payload[:0], payload...)
	c.mu.Unlock()
}

// copyHeader makes dst a deep copy of src, reusing dst's CSRC list. Our
// packetisers add no header extensions; a header with some is cloned.
func copyHeader(dst, src *rtp.Header) {
	if len(src.Extensions) > 0 {
		*dst = src.Clone()
		return
	}
	csrc := dst.CSRC[:0]
	*dst = *src
	dst.CSRC = append(csrc, src.CSRC...)
}

// get copies packet seq into h and buf (reusing buf) and reports whether
// it was there.
func (c *packetCache) get(seq uint16, h *rtp.Header, buf []byte) ([]byte, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s := &c.slots[seq%nackCacheSize]
	if !s.valid || s.header.SequenceNumber != seq {
		return buf, false
	}
	copyHeader(h, &s.header)
	return append(buf[:0], s.payload...), true
}

// nackResponder answers a viewer's NACKs from the room's packet caches. It
// replaces Pion's nack.ResponderInterceptor, which copies every packet into
// a cache per viewer (the largest per-packet cost after SRTP and the send);
// here a packet is copied once per room. Retransmissions are the original
// packets with the viewer's SSRC and payload type (no RTX), written inside
// the viewer's other interceptors (not counted as sent, no sender-report
// octets), like Pion's. A packet is resent at most once per RTT + 5 ms,
// and only one this viewer was sent. Resends run on the viewer's RTCP
// reader goroutine: no goroutine per NACK.
type nackResponder struct {
	interceptor.NoOp
	room *Room
	rtt  func() time.Duration

	mu      sync.Mutex
	streams map[uint32]*nackStream
}

// nackStream is one viewer stream that NACKs may name.
type nackStream struct {
	cache       *packetCache
	ssrc        uint32
	payloadType uint8
	writer      interceptor.RTPWriter // the rest of the chain: SRTP, socket
	// sent is how many packets this viewer was sent (<< 16) and the
	// sequence number of the last (low 16 bits), in one word: the
	// viewer got that many consecutive sequence numbers up to it.
	sent         atomic.Uint64
	mu           sync.Mutex // resends
	resentAt     [nackCacheSize]int64
	resentSeq    [nackCacheSize]uint16
	header       rtp.Header
	payload      []byte
	resentPkts   atomic.Uint64
	suppressed   atomic.Uint64
	notAvailable atomic.Uint64
}

// nackResponderFactory builds one viewer's responder on its room's caches.
type nackResponderFactory struct {
	room *Room
	rtt  func() time.Duration
}

func (f nackResponderFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &nackResponder{room: f.room, rtt: f.rtt, streams: map[uint32]*nackStream{}}, nil
}

// supportsNACK reports whether a stream negotiated generic NACK feedback.
func supportsNACK(info *interceptor.StreamInfo) bool {
	for _, fb := range info.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			return true
		}
	}
	return false
}

// BindLocalStream stores the stream's packets in the room's cache (once per
// room: later viewers only compare a slot) and notes what the viewer got.
func (n *nackResponder) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !supportsNACK(info) || !strings.EqualFold(info.MimeType, webrtc.MimeTypeVP8) {
		return w
	}
	st := &nackStream{cache: &n.room.videoCache, ssrc: info.SSRC, payloadType: info.PayloadType, writer: w}
	n.mu.Lock()
	n.streams[info.SSRC] = st
	n.mu.Unlock()
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == st.ssrc {
			st.cache.put(h, payload)
			st.sent.Store((st.sent.Load()>>16+1)<<16 | uint64(h.SequenceNumber))
		}
		return w.Write(h, payload, a)
	})
}

// UnbindLocalStream forgets the stream.
func (n *nackResponder) UnbindLocalStream(info *interceptor.StreamInfo) {
	n.mu.Lock()
	delete(n.streams, info.SSRC)
	n.mu.Unlock()
}

// BindRTCPReader answers the NACKs in the viewer's RTCP as it is read.
func (n *nackResponder) BindRTCPReader(r interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		i, attr, err := r.Read(b, a)
		if err != nil {
			return 0, nil, err
		}
		if attr == nil {
			attr = make(interceptor.Attributes)
		}
		pkts, err := attr.GetRTCPPackets(b[:i])
		if err != nil {
			return 0, nil, err
		}
		for _, p := range pkts {
			if nack, ok := p.(*rtcp.TransportLayerNack); ok {
				n.resend(nack)
			}
		}
		return i, attr, nil
	})
}

// resend writes the packets a NACK asks for that this viewer was sent and
// the cache still holds.
func (n *nackResponder) resend(nack *rtcp.TransportLayerNack) {
	n.mu.Lock()
	st := n.streams[nack.MediaSSRC]
	n.mu.Unlock()
	if st == nil {
		return
	}
	interval := int64(n.rtt() + 5*time.Millisecond)
	st.mu.Lock()
	defer st.mu.Unlock()
	sent := st.sent.Load()
	count, last := sent>>16, uint16(sent)
	for _, pair := range nack.Nacks {
		pair.Range(func(seq uint16) bool {
			if back := uint64(last - seq); back >= count || back >= nackCacheSize { // not sent to this viewer, or too old
				st.notAvailable.Add(1)
				return true
			}
			i := seq % nackCacheSize
			now := time.Now().UnixNano()
			if st.resentSeq[i] == seq && st.resentAt[i] != 0 && now-st.resentAt[i] < interval {
				st.suppressed.Add(1)
				return true
			}
			var ok bool
			if st.payload, ok = st.cache.get(seq, &st.header, st.payload); !ok {
				st.notAvailable.Add(1)
				return true
			}
			st.header.SSRC, st.header.PayloadType = st.ssrc, st.payloadType
			if _, err := st.writer.Write(&st.header, st.payload, nil); err == nil {
				st.resentSeq[i], st.resentAt[i] = seq, now
				st.resentPkts.Add(1)
			}
			return true
		})
	}
}
