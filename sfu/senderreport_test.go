package sfu

import (
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// TestSenderReports: a report per stream per interval once it has sent,
// with its packet and payload octet counts, the NTP time of the report and
// the RTP time extrapolated from the first packet of the last frame; the
// loop ends with Close; the write path allocates nothing.
func TestSenderReports(t *testing.T) {
	clock := newReportClock(20*time.Millisecond, nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		clock.run()
	}()
	defer func() {
		clock.stop()
		wg.Wait()
	}()
	i, err := senderReporterFactory{clock: clock}.NewInterceptor("")
	if err != nil {
		t.Fatal(err)
	}
	s := i.(*senderReporter)
	var mu sync.Mutex
	var reports []*rtcp.SenderReport
	var at []time.Time
	s.BindRTCPWriter(interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range pkts {
			reports = append(reports, p.(*rtcp.SenderReport))
			at = append(at, time.Now())
		}
		return 0, nil
	}))
	nop := interceptor.RTPWriterFunc(func(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil })
	video := s.BindLocalStream(&interceptor.StreamInfo{SSRC: 1, ClockRate: 90000}, nop)
	s.BindLocalStream(&interceptor.StreamInfo{SSRC: 2, ClockRate: 48000}, nop) // sends nothing: no report
	frameAt := time.Now()
	h := rtp.Header{Version: 2, SSRC: 1, Timestamp: 1_000_000}
	for seq := range 3 {
		h.SequenceNumber = uint16(seq)
		if _, err := video.Write(&h, make([]byte, 1000), nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Second, "two reports", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reports) >= 2
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n := len(reports)
	for k, sr := range reports {
		if sr.SSRC != 1 || sr.PacketCount != 3 || sr.OctetCount != 3000 {
			t.Errorf("report %+v", sr)
		}
		sent := time.Unix(int64(sr.NTPTime>>32)-2208988800, int64((sr.NTPTime&0xffffffff)*1e9>>32))
		if d := at[k].Sub(sent); d < 0 || d > time.Second { // the tick, then the write (slow under -race)
			t.Errorf("report %d: NTP time %v, written at %v", k, sent, at[k])
		}
		elapsed := time.Duration(sr.RTPTime-h.Timestamp) * time.Second / 90000
		if want := sent.Sub(frameAt); elapsed < want-5*time.Millisecond || elapsed > want+5*time.Millisecond {
			t.Errorf("report %d: RTP time %d ahead of the frame (%v), want %v", k, sr.RTPTime-h.Timestamp, elapsed, want)
		}
	}
	mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	if len(reports) != n {
		t.Errorf("%d reports after Close", len(reports)-n)
	}
	mu.Unlock()

	p := make([]byte, 1100)
	if allocs := testing.AllocsPerRun(1000, func() {
		h.SequenceNumber++
		if h.SequenceNumber%8 == 0 {
			h.Timestamp += 3600
		}
		_, _ = video.Write(&h, p, nil)
	}); allocs != 0 {
		t.Errorf("%v allocations per packet", allocs)
	}
}

// TestReportClockSharedByViewers: one clock reports for every bound
// viewer; a closed viewer gets nothing more while the others go on.
func TestReportClockSharedByViewers(t *testing.T) {
	clock := newReportClock(10*time.Millisecond, nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		clock.run()
	}()
	defer func() {
		clock.stop()
		wg.Wait()
	}()
	const viewers = 3
	var mu sync.Mutex
	got := make([]int, viewers)
	reporters := make([]*senderReporter, viewers)
	nop := interceptor.RTPWriterFunc(func(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil })
	for v := range reporters {
		i, err := senderReporterFactory{clock: clock}.NewInterceptor("")
		if err != nil {
			t.Fatal(err)
		}
		s := i.(*senderReporter)
		reporters[v] = s
		s.BindRTCPWriter(interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			got[v] += len(pkts)
			return 0, nil
		}))
		w := s.BindLocalStream(&interceptor.StreamInfo{SSRC: uint32(v + 1), ClockRate: 90000}, nop)
		if _, err := w.Write(&rtp.Header{Version: 2, SSRC: uint32(v + 1), Timestamp: 1}, make([]byte, 100), nil); err != nil {
			t.Fatal(err)
		}
	}
	count := func(v int) int {
		mu.Lock()
		defer mu.Unlock()
		return got[v]
	}
	waitFor(t, 2*time.Second, "reports to every viewer", func() bool {
		for v := range viewers {
			if count(v) < 2 {
				return false
			}
		}
		return true
	})
	if err := reporters[0].Close(); err != nil {
		t.Fatal(err)
	}
	closedAt, otherAt := count(0), count(1)
	waitFor(t, 2*time.Second, "more reports to the open viewers", func() bool { return count(1) >= otherAt+3 && count(2) >= otherAt+3 })
	if n := count(0); n != closedAt {
		t.Errorf("closed viewer got %d reports after Close", n-closedAt)
	}
	// A reporter closed before its writer is bound never joins.
	i, _ := senderReporterFactory{clock: clock}.NewInterceptor("")
	late := i.(*senderReporter)
	_ = late.Close()
	late.BindRTCPWriter(interceptor.RTCPWriterFunc(func([]rtcp.Packet, interceptor.Attributes) (int, error) {
		t.Error("report written to a closed viewer")
		return 0, nil
	}))
	clock.mu.Lock()
	n := len(clock.reporters)
	clock.mu.Unlock()
	if n != viewers-1 {
		t.Errorf("clock holds %d reporters, want %d", n, viewers-1)
	}
	for _, s := range reporters[1:] {
		_ = s.Close()
	}
}
