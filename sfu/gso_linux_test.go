//go:build linux

package sfu

import (
	"net"
	"net/netip"
	"sync"
	"testing"
)

// TestBatchConnGSOFrameFanout: a frame written to many viewers the way a
// track writes it (packet 1 to every viewer, then packet 2, ...) leaves
// with each viewer's packets in one GSO send, in as few sendmmsg calls as
// the batch allows, and every viewer gets its packets in order. With a
// queue of 1,024 datagrams a frame to 250 viewers left in three flushes:
// 500 GSO sends of ~4 packets and 250 single datagrams, in 12 sendmmsg
// calls instead of 4.
func TestBatchConnGSOFrameFanout(t *testing.T) {
	for _, tc := range []struct {
		viewers, packets int
	}{
		{10, 9},
		{250, 9},
		{450, 9}, // 4,050 datagrams: still one flush
	} {
		rxs := make([]*net.UDPConn, tc.viewers)
		dests := make([]netip.AddrPort, tc.viewers)
		for v := range rxs {
			rxs[v] = listenLoopback(t)
			dests[v] = rxs[v].LocalAddr().(*net.UDPAddr).AddrPort()
		}
		bc := newBatchConn(listenLoopback(t), DefaultSendBatch, true, testLogger())
		if !bc.gso.Load() {
			t.Fatal("kernel has no UDP GSO") // Linux ≥ 4.18: every supported kernel
		}
		bc.begin()
		for p := range tc.packets {
			for _, d := range dests {
				if _, err := bc.WriteToAddrPort(sameSize(p), d); err != nil {
					t.Fatal(err)
				}
			}
		}
		bc.end()
		if got, want := bc.gsoSends.Load(), uint64(tc.viewers); got != want {
			t.Errorf("%d viewers: %d GSO sends, want one per viewer (%d)", tc.viewers, got, want)
		}
		if got, want := bc.batched.Load(), uint64(tc.viewers*tc.packets); got != want {
			t.Errorf("%d viewers: %d datagrams sent, want %d", tc.viewers, got, want)
		}
		if got, want := bc.batches.Load(), uint64((tc.viewers+DefaultSendBatch-1)/DefaultSendBatch); got != want {
			t.Errorf("%d viewers: %d sendmmsg calls, want %d", tc.viewers, got, want)
		}
		var wg sync.WaitGroup
		errs := make([]string, tc.viewers)
		for v, rx := range rxs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p, d := range receive(t, rx, tc.packets) {
					if string(d) != string(sameSize(p)) {
						errs[v] = "packets out of order or garbled"
						return
					}
				}
			}()
		}
		wg.Wait()
		for v, e := range errs {
			if e != "" {
				t.Errorf("%d viewers: viewer %d: %s", tc.viewers, v, e)
			}
		}
		if err := bc.Close(); err != nil {
			t.Error(err)
		}
	}
}
