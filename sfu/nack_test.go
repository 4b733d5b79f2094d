package sfu

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// sentPacket is what a fake inner writer got.
type sentPacket struct {
	header  rtp.Header
	payload []byte
}

// nackViewer is one viewer's responder between a fake room writer and a
// fake transport.
type nackViewer struct {
	resp   *nackResponder
	info   *interceptor.StreamInfo
	writer interceptor.RTPWriter
	sent   []sentPacket // what reached the transport
	rtcp   []byte       // the next RTCP the reader returns
	reader interceptor.RTCPReader
}

func newNackViewer(t *testing.T, r *Room, ssrc uint32, pt uint8) *nackViewer {
	t.Helper()
	f := nackResponderFactory{room: r, rtt: func() time.Duration { return 0 }}
	i, err := f.NewInterceptor("")
	if err != nil {
		t.Fatal(err)
	}
	v := &nackViewer{resp: i.(*nackResponder)}
	v.info = &interceptor.StreamInfo{SSRC: ssrc, PayloadType: pt, MimeType: "video/VP8", ClockRate: 90000,
		RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}}
	v.writer = v.resp.BindLocalStream(v.info, interceptor.RTPWriterFunc(func(h *rtp.Header, p []byte, _ interceptor.Attributes) (int, error) {
		v.sent = append(v.sent, sentPacket{header: h.Clone(), payload: append([]byte(nil), p...)})
		return h.MarshalSize() + len(p), nil
	}))
	v.reader = v.resp.BindRTCPReader(interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		return copy(b, v.rtcp), a, nil
	}))
	return v
}

// nack feeds the viewer a NACK for seqs and returns what it resent.
func (v *nackViewer) nack(t *testing.T, seqs ...uint16) []sentPacket {
	t.Helper()
	raw, err := (&rtcp.TransportLayerNack{MediaSSRC: v.info.SSRC, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	v.rtcp = raw
	before := len(v.sent)
	if _, _, err := v.reader.Read(make([]byte, 1500), nil); err != nil {
		t.Fatal(err)
	}
	return v.sent[before:]
}

func nackTestPayload(seq uint16) []byte {
	return bytes.Repeat([]byte{byte(seq), byte(seq >> 8)}, 300+int(seq%7))
}

// writeRoomPacket writes one packet to the viewers the way Pion's shared
// track does: one header, its SSRC and payload type set per binding.
func writeRoomPacket(t *testing.T, seq uint16, viewers ...*nackViewer) {
	t.Helper()
	h := rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: 3000 * uint32(seq/4), Marker: seq%4 == 3}
	p := nackTestPayload(seq)
	for _, v := range viewers {
		h.SSRC, h.PayloadType = v.info.SSRC, v.info.PayloadType
		if _, err := v.writer.Write(&h, p, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNACKResponder: NACKs are answered from the room's one packet cache
// with the asking viewer's SSRC and payload type and the original sequence
// number, timestamp, marker and payload; only packets that viewer was sent;
// a packet at most once per RTT + 5 ms; nothing once it left the cache.
func TestNACKResponder(t *testing.T) {
	r := &Room{}
	a := newNackViewer(t, r, 1111, 96)
	b := newNackViewer(t, r, 2222, 97)
	for seq := uint16(65530); seq != 2; seq++ { // wraps
		writeRoomPacket(t, seq, a)
	}
	for seq := uint16(2); seq != 10; seq++ { // b joins at 2
		writeRoomPacket(t, seq, a, b)
	}
	check := func(name string, got []sentPacket, v *nackViewer, want ...uint16) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d packets resent, want %d", name, len(got), len(want))
		}
		for i, p := range got {
			seq := want[i]
			h := p.header
			if h.SSRC != v.info.SSRC || h.PayloadType != v.info.PayloadType || h.SequenceNumber != seq ||
				h.Timestamp != 3000*uint32(seq/4) || h.Marker != (seq%4 == 3) || !bytes.Equal(p.payload, nackTestPayload(seq)) {
				t.Errorf("%s: resent %+v (%d bytes), want seq %d of SSRC %d PT %d", name, h, len(p.payload), seq, v.info.SSRC, v.info.PayloadType)
			}
		}
	}
	check("a", a.nack(t, 65534, 1, 5), a, 65534, 1, 5)
	check("b", b.nack(t, 1, 5, 9, 10), b, 5, 9) // 1: before b joined; 10: not sent yet
	check("a again at once", a.nack(t, 65534, 7), a, 7)
	time.Sleep(10 * time.Millisecond)
	check("a after the interval", a.nack(t, 65534), a, 65534)
	for seq := uint16(10); seq != 10+nackCacheSize; seq++ {
		writeRoomPacket(t, seq, a, b)
	}
	check("a, out of the cache", a.nack(t, 9, 10+nackCacheSize-1), a, 10+nackCacheSize-1)
	b.resp.UnbindLocalStream(b.info)
	check("b unbound", b.nack(t, 10+nackCacheSize-1), b)

	// A viewer that has been sent more than 65536 packets still gets
	// the last ones across the wrap of the sequence numbers.
	c := newNackViewer(t, &Room{}, 3333, 96)
	for seq := 0; seq < 1<<16+100; seq++ {
		writeRoomPacket(t, uint16(seq), c)
	}
	check("c, long-lived", c.nack(t, 65500, 99, 100), c, 65500, 99)

	// The write path allocates nothing.
	a.sent = a.sent[:0:0]
	var seq uint16 = 5000
	h := rtp.Header{Version: 2, SSRC: 1111, PayloadType: 96}
	p := make([]byte, 1100)
	quiet := nackViewer{info: a.info}
	w := a.resp.BindLocalStream(quiet.info, interceptor.RTPWriterFunc(func(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil }))
	write := func() {
		seq++
		h.SequenceNumber, h.Timestamp = seq, uint32(seq)*90
		_, _ = w.Write(&h, p, nil)
	}
	for range nackCacheSize { // the cache's buffers grow to 1100 bytes once
		write()
	}
	if allocs := testing.AllocsPerRun(2000, write); allocs != 0 {
		t.Errorf("%v allocations per packet written", allocs)
	}
}

// TestNACKsSharedCache: real viewers over loopback NACK the same recent
// packets; each gets them again on its own SSRC (counted as duplicates by
// its track reader), served from the room's one cache.
func TestNACKsSharedCache(t *testing.T) {
	s := newTestSFU(t, Config{})
	room, err := s.OpenRoom("nacks", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src := startSource(room, 4000)
	defer src.close()
	clients := connectViewers(t, room, 3, clientOptions{video: true, audio: true})
	dups := make([]int, len(clients))
	for i, c := range clients {
		ssrc := uint32(c.track(webrtc.RTPCodecTypeVideo).SSRC())
		snap := c.snapshot(webrtc.RTPCodecTypeVideo)
		dups[i] = snap.dups
		if err := c.pc.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{
			MediaSSRC: ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{snap.lastSeq - 4, snap.lastSeq - 2, snap.lastSeq - 1}),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range clients {
		waitFor(t, 3*time.Second, "the retransmissions", func() bool { return c.snapshot(webrtc.RTPCodecTypeVideo).dups >= dups[i]+3 })
	}
	for _, v := range room.Stats().Viewers {
		if v.NACKsReceived != 1 || v.NACKedPackets != 3 {
			t.Errorf("viewer %s: %d NACKs for %d packets, want 1 for 3", v.ID, v.NACKsReceived, v.NACKedPackets)
		}
	}
}
