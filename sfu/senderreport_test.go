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
	i, err := senderReporterFactory{interval: 20 * time.Millisecond}.NewInterceptor("")
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
