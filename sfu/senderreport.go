package sfu

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// senderReporter sends a viewer an RTCP sender report per stream every
// interval (A/V sync in the browser; the viewer's receiver reports echo it,
// which gives the RTT). It does what Pion's report.SenderInterceptor does,
// with less work per packet: two atomic adds and a compare, the clock read
// and a lock only on the first packet of each frame (where Pion takes a
// lock and reads the clock for every packet). One goroutine per viewer,
// ended by Close (the PeerConnection's close).
type senderReporter struct {
	interceptor.NoOp
	interval time.Duration

	mu      sync.Mutex
	streams map[uint32]*srStream
	closed  bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// srStream is one stream's sending record.
type srStream struct {
	ssrc      uint32
	clockRate float64

	packets, octets atomic.Uint32 // wrap, as in RFC 3550
	started         atomic.Bool
	ts              atomic.Uint32 // RTP timestamp of the current frame

	mu       sync.Mutex // the frame's pair below, read by reports
	frameTS  uint32
	frameAt  time.Time
	hasFrame bool
}

type senderReporterFactory struct{ interval time.Duration }

func (f senderReporterFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &senderReporter{interval: f.interval, streams: map[uint32]*srStream{}, done: make(chan struct{})}, nil
}

// BindRTCPWriter starts the viewer's report loop.
func (s *senderReporter) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return w
	}
	s.wg.Add(1)
	go s.loop(w)
	return w
}

// BindLocalStream records what the stream sends.
func (s *senderReporter) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	st := &srStream{ssrc: info.SSRC, clockRate: float64(info.ClockRate)}
	s.mu.Lock()
	s.streams[info.SSRC] = st
	s.mu.Unlock()
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		st.sent(h, len(payload))
		return w.Write(h, payload, a)
	})
}

// UnbindLocalStream stops reporting the stream.
func (s *senderReporter) UnbindLocalStream(info *interceptor.StreamInfo) {
	s.mu.Lock()
	delete(s.streams, info.SSRC)
	s.mu.Unlock()
}

// Close ends the report loop.
func (s *senderReporter) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *senderReporter) loop(w interceptor.RTCPWriter) {
	defer s.wg.Done()
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	var streams []*srStream
	for {
		select {
		case <-s.done:
			return
		case now := <-tick.C:
			s.mu.Lock()
			streams = streams[:0]
			for _, st := range s.streams {
				streams = append(streams, st)
			}
			s.mu.Unlock()
			for _, st := range streams {
				if sr := st.report(now); sr != nil {
					_, _ = w.Write([]rtcp.Packet{sr}, interceptor.Attributes{})
				}
			}
		}
	}
}

// sent counts a packet; the first of a frame (a new timestamp) notes when
// it left, which anchors the reports' RTP time.
func (st *srStream) sent(h *rtp.Header, payloadLen int) {
	if !st.started.Load() || h.Timestamp != st.ts.Load() {
		now := time.Now()
		st.mu.Lock()
		st.frameTS, st.frameAt, st.hasFrame = h.Timestamp, now, true
		st.mu.Unlock()
		st.ts.Store(h.Timestamp)
		st.started.Store(true)
	}
	st.packets.Add(1)
	st.octets.Add(uint32(payloadLen))
}

// report is the stream's sender report at now, nil before its first packet
// (RFC 3550 §6.4: a source that sent nothing sends no SR).
func (st *srStream) report(now time.Time) *rtcp.SenderReport {
	st.mu.Lock()
	ts, at, ok := st.frameTS, st.frameAt, st.hasFrame
	st.mu.Unlock()
	if !ok {
		return nil
	}
	return &rtcp.SenderReport{
		SSRC:        st.ssrc,
		NTPTime:     ntpTime(now),
		RTPTime:     ts + uint32(now.Sub(at).Seconds()*st.clockRate),
		PacketCount: st.packets.Load(),
		OctetCount:  st.octets.Load(),
	}
}

// ntpTime is the 64-bit NTP timestamp of t (RFC 3550 §4): seconds since
// 1900 and a binary fraction; ntpCompact is its middle 32 bits.
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800 // 1900 → 1970, seconds
	secs := uint64(t.Unix()) + ntpEpochOffset
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}
