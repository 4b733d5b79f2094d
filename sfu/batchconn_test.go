package sfu

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// listenLoopback opens a UDP socket on 127.0.0.1, closed at cleanup.
func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// receive reads n datagrams (or fails after a timeout) and returns them.
func receive(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	out := make([][]byte, 0, n)
	buf := make([]byte, 2048)
	for len(out) < n {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(out), n, err)
		}
		out = append(out, append([]byte(nil), buf[:k]...))
	}
	return out
}

// nothingMore checks that c receives no datagram within d.
func nothingMore(t *testing.T, c *net.UDPConn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	if n, _, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("unexpected datagram of %d bytes", n)
	}
}

// sameSize is numbered with every datagram 1,150 bytes, an SRTP packet.
func sameSize(i int) []byte {
	b := make([]byte, 1150)
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

func numbered(i int) []byte {
	b := make([]byte, 100+i%50)
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

// TestBatchConnOrderAndFlush: inside a scope datagrams wait for the scope's
// end or a full batch; they arrive complete and in order; outside a scope a
// write goes out at once.
func TestBatchConnOrderAndFlush(t *testing.T) {
	for _, tc := range []struct {
		name             string
		writes, maxBatch int
		gso, sameSize    bool
	}{
		{"under one batch", 10, 64, false, false},
		{"several full batches", 200, 64, false, false},
		{"batch of one", 5, 1, false, false},
		{"GSO, sizes vary", 200, 64, true, false},
		{"GSO, one size", 300, 8, true, true},
		{"GSO, one size, full batches", 2000, 64, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rx := listenLoopback(t)
			bc := newBatchConn(listenLoopback(t), tc.maxBatch, tc.gso, testLogger())
			to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
			if tc.gso && !bc.gso.Load() && batchingSupported() {
				t.Fatal("kernel has no UDP GSO") // Linux ≥ 4.18: every supported kernel
			}
			numbered := numbered
			if tc.sameSize {
				numbered = sameSize
			}
			bc.begin()
			for i := range tc.writes {
				buf := numbered(i)
				if n, err := bc.WriteToAddrPort(buf, to); err != nil || n != len(buf) {
					t.Fatalf("write %d: %d, %v", i, n, err)
				}
				clear(buf) // the conn must have copied it
			}
			full := tc.writes / bc.maxQueue * bc.maxQueue
			got := receive(t, rx, full)
			nothingMore(t, rx, 50*time.Millisecond) // the rest waits for end
			bc.end()
			got = append(got, receive(t, rx, tc.writes-full)...)
			for i, d := range got {
				if want := numbered(i); string(d) != string(want) {
					t.Fatalf("datagram %d: got %d bytes starting %x, want %d starting %x", i, len(d), d[:4], len(want), want[:4])
				}
			}
			// Outside a scope: at once, through WriteTo as well.
			if _, err := bc.WriteTo(numbered(7), rx.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if d := receive(t, rx, 1); string(d[0]) != string(numbered(7)) {
				t.Error("direct write garbled")
			}
			if err := bc.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestBatchConnCloseFlushes: Close sends what a still-open scope queued,
// and later writes fail with net.ErrClosed.
func TestBatchConnCloseFlushes(t *testing.T) {
	rx := listenLoopback(t)
	bc := newBatchConn(listenLoopback(t), 64, true, testLogger())
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	bc.begin()
	for i := range 3 {
		if _, err := bc.WriteToAddrPort(numbered(i), to); err != nil {
			t.Fatal(err)
		}
	}
	if err := bc.Close(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, rx, 3); string(got[2]) != string(numbered(2)) {
		t.Error("close flushed the wrong datagrams")
	}
	if _, err := bc.WriteToAddrPort(numbered(9), to); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v, want net.ErrClosed", err)
	}
	bc.end() // a scope ending after Close must not panic or send
}

// fakeBatch is a batchWriter that sends at most perCall messages per call
// and refuses the messages whose first byte is in refuse.
type fakeBatch struct {
	perCall int
	refuse  map[byte]bool
	calls   int
	sent    []byte // first byte of each sent message, in order
}

func (f *fakeBatch) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	f.calls++
	n := 0
	for _, m := range ms {
		if n == f.perCall {
			break
		}
		if f.refuse[m.Buffers[0][0]] {
			if n == 0 {
				return 0, &net.OpError{Op: "write", Err: syscall.EPERM}
			}
			break // report the ones before it; the next call fails on it
		}
		f.sent = append(f.sent, m.Buffers[0][0])
		n++
	}
	return n, nil
}

// TestBatchConnPartialWrites: a WriteBatch that sends fewer than asked is
// called again for the rest; a refused datagram is skipped and counted, the
// others still leave in order.
func TestBatchConnPartialWrites(t *testing.T) {
	for _, tc := range []struct {
		name    string
		perCall int
		refuse  []byte
		want    string
		errors  uint64
	}{
		{"all at once", 64, nil, "abcdefghij", 0},
		{"three per call", 3, nil, "abcdefghij", 0},
		{"one per call", 1, nil, "abcdefghij", 0},
		{"refused in the middle", 64, []byte("e"), "abcdfghij", 1},
		{"refused first and last, partial", 2, []byte("aj"), "bcdefghi", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeBatch{perCall: tc.perCall, refuse: map[byte]bool{}}
			for _, b := range tc.refuse {
				f.refuse[b] = true
			}
			bc := newBatchConnWith(listenLoopback(t), f, 64, testLogger())
			to := netip.MustParseAddrPort("127.0.0.1:9")
			bc.begin()
			for _, b := range []byte("abcdefghij") {
				if _, err := bc.WriteToAddrPort([]byte{b, 0}, to); err != nil {
					t.Fatal(err)
				}
			}
			bc.end()
			if string(f.sent) != tc.want {
				t.Errorf("sent %q, want %q", f.sent, tc.want)
			}
			if got := bc.sendErrors.Load(); got != tc.errors {
				t.Errorf("%d send errors counted, want %d", got, tc.errors)
			}
			if f.calls > 20 {
				t.Errorf("%d WriteBatch calls for 10 datagrams", f.calls)
			}
		})
	}
}

// TestBatchConnDirectWriteError: outside a scope the writer gets the error.
func TestBatchConnDirectWriteError(t *testing.T) {
	bc := newBatchConn(listenLoopback(t), 64, true, testLogger())
	// Port 0 is not a destination: sendto fails with EINVAL.
	if _, err := bc.WriteToAddrPort([]byte("x"), netip.MustParseAddrPort("127.0.0.1:0")); err == nil {
		t.Error("write to port 0 succeeded")
	}
	if _, err := bc.WriteTo([]byte("x"), &net.IPAddr{IP: net.IPv4(127, 0, 0, 1)}); err == nil {
		t.Error("write to a non-UDP address succeeded")
	}
}

// TestBatchConnConcurrentWriters: writers inside and outside scopes from
// many goroutines; every datagram arrives once and each writer's own
// datagrams arrive in its order (run with -race).
func TestBatchConnConcurrentWriters(t *testing.T) {
	rx := listenLoopback(t)
	bc := newBatchConn(listenLoopback(t), 16, true, testLogger())
	t.Cleanup(func() { _ = bc.Close() })
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	const writers, each = 8, 150
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				scoped := w%2 == 0 // half the writers are fan-outs
				if scoped && i%10 == 0 {
					bc.begin()
				}
				b := make([]byte, 8)
				binary.BigEndian.PutUint32(b, uint32(w))
				binary.BigEndian.PutUint32(b[4:], uint32(i))
				if _, err := bc.WriteToAddrPort(b, to); err != nil {
					failed.Store(true)
				}
				if scoped && i%10 == 9 {
					bc.end()
				}
			}
		}()
	}
	got := receive(t, rx, writers*each)
	wg.Wait()
	if failed.Load() {
		t.Fatal("a write failed")
	}
	next := make([]uint32, writers)
	for _, d := range got {
		w, i := binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])
		if i != next[w] {
			t.Fatalf("writer %d: datagram %d arrived when %d was expected", w, i, next[w])
		}
		next[w]++
	}
	nothingMore(t, rx, 50*time.Millisecond)
}

// TestFanoutBatched: real Pion viewers receive every packet, in order, with
// batching off, on without GSO and on with GSO, and the sends really were
// batched (and segmented by the kernel).
func TestFanoutBatched(t *testing.T) {
	for _, tc := range []struct {
		name                string
		disable, disableGSO bool
	}{
		{"off", true, false},
		{"sendmmsg", false, true},
		{"sendmmsg+GSO", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 8
			s := newTestSFU(t, Config{MaxPendingViewers: n, DisableSendBatching: tc.disable, DisableGSO: tc.disableGSO})
			if (s.batch != nil) != (!tc.disable && batchingSupported()) {
				t.Fatalf("batching on: %v with DisableSendBatching=%v", s.batch != nil, tc.disable)
			}
			var src *source
			room, err := s.OpenRoom("batched", RoomOptions{OnKeyframeRequest: func() { src.keyReq.Store(true) }})
			if err != nil {
				t.Fatal(err)
			}
			src = startSource(room, 6000)
			defer src.close()
			clients := connectViewers(t, room, n, clientOptions{video: true, audio: true})
			var batches0, batched0, gso0 uint64
			if s.batch != nil {
				batches0, batched0, gso0 = s.batch.batches.Load(), s.batch.batched.Load(), s.batch.gsoSends.Load()
			}
			before, fb, ab := snapshots(clients), src.frames.Load(), src.audio.Load()
			const window = 2 * time.Second
			time.Sleep(window)
			checkStreams(t, src, clients, window, before, fb, ab)
			if s.batch == nil {
				return
			}
			calls, dgrams, gso := s.batch.batches.Load()-batches0, s.batch.batched.Load()-batched0, s.batch.gsoSends.Load()-gso0
			// A 6 kB frame is ~6 packets × 8 viewers; audio 1 × 8.
			if calls == 0 || float64(dgrams)/float64(calls) < 4 {
				t.Errorf("%d datagrams in %d sendmmsg calls: not batched", dgrams, calls)
			}
			if wantGSO := !tc.disableGSO && s.batch.gso.Load(); wantGSO != (gso > 0) {
				t.Errorf("%d GSO sends with GSO %v", gso, wantGSO)
			}
			if e := s.batch.sendErrors.Load(); e != 0 {
				t.Errorf("%d batched sends failed", e)
			}
			t.Logf("%d datagrams in %d sendmmsg calls (%.1f per call), %d GSO sends", dgrams, calls, float64(dgrams)/float64(calls), gso)
		})
	}
}

// refuseGSO is a batchWriter whose kernel refuses GSO messages (EIO, as a
// device without checksum offload does) and sends the others for real.
type refuseGSO struct {
	real    batchWriter
	refused int
}

func (r *refuseGSO) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	for i, m := range ms {
		if len(m.Buffers) > 1 {
			if i == 0 {
				r.refused++
				return 0, &net.OpError{Op: "write", Err: syscall.EIO}
			}
			n, err := r.real.WriteBatch(ms[:i], flags)
			return n, err
		}
	}
	return r.real.WriteBatch(ms, flags)
}

// TestBatchConnGSORefused: a GSO send the kernel refuses turns GSO off; its
// datagrams still arrive, in order, and later flushes send without GSO.
func TestBatchConnGSORefused(t *testing.T) {
	rx := listenLoopback(t)
	tx := listenLoopback(t)
	fake := &refuseGSO{real: ipv4.NewPacketConn(tx)}
	bc := newBatchConnWith(tx, fake, 64, testLogger())
	bc.gso.Store(true)
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	for round := range 2 {
		bc.begin()
		for i := range 20 {
			if _, err := bc.WriteToAddrPort(sameSize(round*20+i), to); err != nil {
				t.Fatal(err)
			}
		}
		bc.end()
		for i, d := range receive(t, rx, 20) {
			if string(d) != string(sameSize(round*20+i)) {
				t.Fatalf("round %d: datagram %d out of order or garbled", round, i)
			}
		}
	}
	if bc.gso.Load() {
		t.Error("GSO still on after the kernel refused it")
	}
	if fake.refused != 1 {
		t.Errorf("%d GSO sends refused, want 1 (then none tried)", fake.refused)
	}
	if e := bc.sendErrors.Load(); e != 0 {
		t.Errorf("%d datagrams lost", e)
	}
	nothingMore(t, rx, 50*time.Millisecond)
}

// TestBatchConnAllocs: once warm, a fan-out scope allocates nothing per
// datagram (buffers, messages and addresses are reused), with and without
// GSO.
func TestBatchConnAllocs(t *testing.T) {
	for _, gso := range []bool{false, true} {
		rx := listenLoopback(t)
		bc := newBatchConn(listenLoopback(t), 64, gso, testLogger())
		dests := []netip.AddrPort{rx.LocalAddr().(*net.UDPAddr).AddrPort(), netip.MustParseAddrPort("127.0.0.1:9")}
		pkt := sameSize(1)
		scope := func() {
			bc.begin()
			for i := range 300 {
				_, _ = bc.WriteToAddrPort(pkt, dests[i%2])
			}
			bc.end()
		}
		scope()
		// A few per sendmmsg call are x/net's: its sync.Pool drops items
		// at random under -race. One per datagram would be 300.
		if allocs := testing.AllocsPerRun(20, scope); allocs > 30 {
			t.Errorf("GSO %v: %.0f allocations per 300-datagram scope", gso, allocs)
		}
		_ = bc.Close()
	}
}
