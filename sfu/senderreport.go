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
// lock and reads the clock for every packet). It has no goroutine of its
// own: the SFU's reportClock ticks for every viewer at once.
type senderReporter struct {
	interceptor.NoOp
	clock *reportClock

	mu      sync.Mutex
	streams map[uint32]*srStream
	closed  bool
	// sendMu is held while the clock writes this viewer's reports, so
	// that Close returns only once no write is under way.
	sendMu sync.Mutex
	w      interceptor.RTCPWriter // under sendMu; nil until bound
	batch  []*srStream            // under sendMu: reused per tick
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

type senderReporterFactory struct{ clock *reportClock }

func (f senderReporterFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &senderReporter{clock: f.clock, streams: map[uint32]*srStream{}}, nil
}

// BindRTCPWriter joins the clock: reports go out through w from now on.
func (s *senderReporter) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		s.w = w
		s.clock.add(s)
	}
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

// Close leaves the clock; once it returns no report is being written or
// will be.
func (s *senderReporter) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.sendMu.Lock() // a tick writing now finishes first
	defer s.sendMu.Unlock()
	s.w = nil
	s.clock.remove(s)
	return nil
}

// report writes the viewer's sender reports at now (clock goroutine).
func (s *senderReporter) report(now time.Time) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.w == nil {
		return
	}
	s.mu.Lock()
	s.batch = s.batch[:0]
	for _, st := range s.streams {
		s.batch = append(s.batch, st)
	}
	s.mu.Unlock()
	for _, st := range s.batch {
		if sr := st.report(now); sr != nil {
			_, _ = s.w.Write([]rtcp.Packet{sr}, interceptor.Attributes{})
		}
	}
}

// reportClock sends the sender reports of every viewer of the SFU each
// interval from one goroutine, inside one batch scope of the media socket:
// a tick is one sendmmsg for all of them, where a ticker per viewer woke a
// goroutine and made a system call per viewer per second. Start it with
// run on a goroutine its owner waits for; stop closes it.
type reportClock struct {
	interval time.Duration
	batch    *batchConn // may be nil: no batching

	mu        sync.Mutex
	reporters map[*senderReporter]struct{}
	done      chan struct{}
	stopped   bool
}

func newReportClock(interval time.Duration, batch *batchConn) *reportClock {
	return &reportClock{interval: interval, batch: batch, reporters: map[*senderReporter]struct{}{}, done: make(chan struct{})}
}

func (c *reportClock) add(s *senderReporter) {
	c.mu.Lock()
	c.reporters[s] = struct{}{}
	c.mu.Unlock()
}

func (c *reportClock) remove(s *senderReporter) {
	c.mu.Lock()
	delete(c.reporters, s)
	c.mu.Unlock()
}

// stop ends run (once).
func (c *reportClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.stopped = true
		close(c.done)
	}
}

// run ticks until stop.
func (c *reportClock) run() {
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	var reporters []*senderReporter
	for {
		select {
		case <-c.done:
			return
		case now := <-tick.C:
			c.mu.Lock()
			reporters = reporters[:0]
			for s := range c.reporters {
				reporters = append(reporters, s)
			}
			c.mu.Unlock()
			c.batch.begin()
			for _, s := range reporters {
				s.report(now)
			}
			c.batch.end()
			clear(reporters) // hold no closed viewer until the next tick
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
