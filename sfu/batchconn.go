package sfu

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// DefaultSendBatch is the most messages one sendmmsg carries. Without UDP
// GSO a fan-out flushes its queue whenever it holds this many datagrams;
// with GSO the queue holds gsoQueueFactor times more, so that each viewer's
// packets of a frame meet in it and leave as one GSO send.
const DefaultSendBatch = 64

const (
	// gsoQueueFactor: 4,096 datagrams hold a 10 kB frame (9 packets) to
	// 450 viewers. With 1,024 a frame to 250 viewers left in three flushes
	// and each viewer's packets in runs of ~4 instead of 9 (~1 µs more
	// CPU per packet). The reused copy buffers (≤ 1,500 bytes each) then
	// peak at ~6 MB for the worker.
	gsoQueueFactor = 64
	// gsoMaxSegments and gsoMaxBytes bound one GSO send (the kernel's
	// UDP_MAX_SEGMENTS is 64 before Linux 6.9; a datagram is < 64 KiB).
	gsoMaxSegments = 64
	gsoMaxBytes    = 60000
)

// batchWriter sends several datagrams in one system call (sendmmsg on
// Linux): *ipv4.PacketConn and *ipv6.PacketConn, or a test's fake. It
// returns how many of ms, from the first, were sent.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// queued is one datagram waiting for a flush: a copy of the caller's bytes.
type queued struct {
	buf  []byte
	addr netip.AddrPort
}

// batchConn is the media socket under Pion's ICE UDP mux. Outside a batch
// scope (begin/end) every write goes to the socket at once, as a plain
// net.UDPConn's would. Inside one — a room's fan-out of one sample to every
// viewer — writes from any goroutine are copied into a queue, and the queue
// goes out with sendmmsg when it holds maxQueue datagrams and whenever a
// scope ends. Nothing waits on a timer: a queued datagram leaves at the
// latest when the scope it was queued in ends (the fan-out of one frame: a
// few ms). Datagrams to one destination leave in the order their writes
// returned (without GSO, all datagrams do). Errors of queued datagrams
// cannot reach their writer (it has returned): they are counted and logged,
// as a lost UDP datagram would be; a direct write returns its error.
//
// It implements net.PacketConn and ice.AddrPortReaderWriter (Pion's
// allocation-free path), so the mux uses WriteToAddrPort.
type batchConn struct {
	conn     *net.UDPConn
	batch    batchWriter
	log      *slog.Logger
	maxBatch int // messages per WriteBatch
	maxQueue int // queued datagrams that trigger a flush
	// gso: the kernel takes UDP_SEGMENT; it is turned off for good when a
	// GSO send fails (a device without checksum offload: EIO).
	gso atomic.Bool

	mu     sync.Mutex
	scopes int      // open batch scopes
	queue  []queued // in write order
	spare  []queued // the queue slice not in use (double buffer)
	free   [][]byte // copy buffers for reuse
	closed bool

	// sendMu is held while datagrams go to the socket, so flushes and
	// direct writes leave in the order they were taken from the queue.
	sendMu sync.Mutex
	msgs   []ipv4.Message // under sendMu
	addrs  []net.UDPAddr  // under sendMu, one per msgs entry
	ips    [][16]byte     // under sendMu, backing addrs' IPs
	segs   []int          // under sendMu: datagrams in each msgs entry
	oobs   [][]byte       // under sendMu: each entry's GSO control message
	// GSO grouping, under sendMu: group of each destination, the queue
	// sorted by group (stable), and its buffers in that order.
	group  map[netip.AddrPort]int
	counts []int
	sorted []queued
	bufs   [][]byte

	sendErrors atomic.Uint64
	batches    atomic.Uint64 // WriteBatch calls
	batched    atomic.Uint64 // datagrams sent by WriteBatch
	gsoSends   atomic.Uint64 // messages of several datagrams (GSO) sent
}

// newBatchConn wraps conn. maxBatch <= 0 means DefaultSendBatch.
// UDP GSO is used when useGSO and the kernel has it.
func newBatchConn(conn *net.UDPConn, maxBatch int, useGSO bool, log *slog.Logger) *batchConn {
	var bw batchWriter
	if conn.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		bw = ipv4.NewPacketConn(conn)
	} else {
		bw = ipv6.NewPacketConn(conn)
	}
	c := newBatchConnWith(conn, bw, maxBatch, log)
	if useGSO && gsoAvailable(conn) {
		c.gso.Store(true)
		c.maxQueue = gsoQueueFactor * c.maxBatch
	}
	return c
}

func newBatchConnWith(conn *net.UDPConn, bw batchWriter, maxBatch int, log *slog.Logger) *batchConn {
	if maxBatch <= 0 {
		maxBatch = DefaultSendBatch
	}
	return &batchConn{conn: conn, batch: bw, log: log, maxBatch: maxBatch, maxQueue: maxBatch, group: make(map[netip.AddrPort]int)}
}

// batchingSupported: elsewhere WriteBatch sends one message per call, so
// queueing would only add a copy.
func batchingSupported() bool { return runtime.GOOS == "linux" }

// begin opens a batch scope; the caller must call end. Safe on nil (no
// batching).
func (c *batchConn) begin() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.scopes++
	c.mu.Unlock()
}

// end closes a scope and sends everything queued.
func (c *batchConn) end() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.scopes--
	c.mu.Unlock()
	c.flush()
}

// WriteTo implements net.PacketConn.
func (c *batchConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("sfu: media socket write: address %T is not UDP", addr)
	}
	return c.WriteToAddrPort(b, ua.AddrPort())
}

// WriteToAddrPort queues b inside a batch scope and writes it at once
// outside one.
func (c *batchConn) WriteToAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.scopes == 0 {
		c.mu.Unlock()
		c.sendMu.Lock()
		defer c.sendMu.Unlock()
		c.flushLocked() // what this goroutine queued before goes first
		return c.conn.WriteToUDPAddrPort(b, addr)
	}
	var buf []byte
	if n := len(c.free); n > 0 && cap(c.free[n-1]) >= len(b) {
		buf = c.free[n-1][:len(b)]
		c.free = c.free[:n-1]
	} else {
		buf = make([]byte, len(b), max(len(b), 1500))
	}
	copy(buf, b)
	c.queue = append(c.queue, queued{buf: buf, addr: addr})
	full := len(c.queue) >= c.maxQueue
	c.mu.Unlock()
	if full {
		c.flush()
	}
	return len(b), nil
}

// flush sends everything queued.
func (c *batchConn) flush() {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.flushLocked()
}

// flushLocked sends the queue; the caller holds sendMu.
func (c *batchConn) flushLocked() {
	c.mu.Lock()
	q := c.queue
	c.queue, c.spare = c.spare, nil
	c.mu.Unlock()
	if len(q) == 0 {
		c.mu.Lock()
		c.spare = q
		c.mu.Unlock()
		return
	}
	if c.gso.Load() {
		c.sendGSO(q)
	} else {
		for start := 0; start < len(q); start += c.maxBatch {
			c.send(q[start:min(start+c.maxBatch, len(q))])
		}
	}
	c.mu.Lock()
	for i := range q {
		if len(c.free) < c.maxQueue {
			c.free = append(c.free, q[i].buf)
		}
		q[i] = queued{}
	}
	c.spare = q[:0]
	c.mu.Unlock()
}

// setAddr points msgs[i] at addr (the slot's own UDPAddr: no allocation).
func (c *batchConn) setAddr(i int, addr netip.AddrPort) {
	a := &c.addrs[i]
	ip := addr.Addr()
	if ip.Is4() || ip.Is4In6() {
		v4 := ip.Unmap().As4()
		a.IP = c.ips[i][:4]
		copy(a.IP, v4[:])
	} else {
		c.ips[i] = ip.As16()
		a.IP = c.ips[i][:16]
	}
	a.Port, a.Zone = int(addr.Port()), ip.Zone()
	c.msgs[i].Addr = a
	c.msgs[i].N, c.msgs[i].NN, c.msgs[i].Flags = 0, 0, 0
}

// grow makes room for n messages.
func (c *batchConn) grow(n int) {
	if cap(c.msgs) >= n {
		return
	}
	c.msgs = make([]ipv4.Message, n)
	c.addrs = make([]net.UDPAddr, n)
	c.ips = make([][16]byte, n)
	c.segs = make([]int, n)
	c.oobs = make([][]byte, n)
}

// send writes q (at most maxBatch datagrams), one message each.
func (c *batchConn) send(q []queued) {
	c.grow(len(q))
	c.bufs = c.bufs[:0]
	for _, d := range q {
		c.bufs = append(c.bufs, d.buf)
	}
	for i, d := range q {
		c.setAddr(i, d.addr)
		c.msgs[i].Buffers = c.bufs[i : i+1 : i+1]
		c.msgs[i].OOB = nil
		c.segs[i] = 1
	}
	c.write(len(q), q)
}

// sendGSO groups q by destination (keeping each destination's order) and
// sends each run of equal-sized datagrams to one destination (the last may
// be shorter) as one GSO message: the kernel's send path runs once per run.
func (c *batchConn) sendGSO(q []queued) {
	clear(c.group)
	c.counts = c.counts[:0]
	for _, d := range q {
		g, ok := c.group[d.addr]
		if !ok {
			g = len(c.counts)
			c.group[d.addr] = g
			c.counts = append(c.counts, 0)
		}
		c.counts[g]++
	}
	// Counting sort by group: offsets, then place.
	off := 0
	for g, n := range c.counts {
		c.counts[g] = off
		off += n
	}
	c.sorted = append(c.sorted[:0], q...)
	for _, d := range q {
		g := c.group[d.addr]
		c.sorted[c.counts[g]] = d
		c.counts[g]++
	}
	c.bufs = c.bufs[:0]
	for _, d := range c.sorted {
		c.bufs = append(c.bufs, d.buf)
	}
	c.grow(min(len(q), c.maxBatch))
	n := 0 // messages built
	flush := func() {
		if n > 0 {
			c.write(n, nil)
			n = 0
		}
	}
	for i := 0; i < len(c.sorted); {
		size := len(c.sorted[i].buf)
		j, bytes := i+1, size
		for j < len(c.sorted) && j-i < gsoMaxSegments && c.sorted[j].addr == c.sorted[i].addr &&
			len(c.sorted[j-1].buf) == size && len(c.sorted[j].buf) <= size && bytes+len(c.sorted[j].buf) <= gsoMaxBytes {
			bytes += len(c.sorted[j].buf)
			j++
		}
		c.setAddr(n, c.sorted[i].addr)
		c.msgs[n].Buffers = c.bufs[i:j:j]
		c.msgs[n].OOB = nil
		if j-i > 1 {
			c.oobs[n] = gsoControl(c.oobs[n], size)
			c.msgs[n].OOB = c.oobs[n]
		}
		c.segs[n] = j - i
		n++
		i = j
		if n == c.maxBatch {
			flush()
		}
	}
	flush()
}

// write sends msgs[:n] with WriteBatch, resuming after a partial write and
// skipping a message the kernel refuses. A refused GSO message turns GSO
// off and its datagrams go out one by one.
func (c *batchConn) write(n int, q []queued) {
	ms := c.msgs[:n]
	for i := 0; i < len(ms); {
		k, err := c.batch.WriteBatch(ms[i:], 0)
		if k > 0 {
			c.batches.Add(1)
			for _, s := range c.segs[i : i+k] {
				c.batched.Add(uint64(s))
				if s > 1 {
					c.gsoSends.Add(1)
				}
			}
			i += k
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				c.dropped(ms[i:], "media socket closed with datagrams queued", err)
				break
			}
			if c.segs[i] > 1 {
				c.gso.Store(false)
				c.log.Warn("sfu: UDP GSO send failed; sending without GSO from now on", "err", err)
				for _, b := range ms[i].Buffers {
					if _, err := c.conn.WriteToUDPAddrPort(b, ms[i].Addr.(*net.UDPAddr).AddrPort()); err != nil {
						c.sendErrors.Add(1)
					}
				}
			} else {
				c.dropped(ms[i:i+1], "batched send failed", err)
			}
			i++
			continue
		}
		if k <= 0 { // no progress and no error: never spin
			c.dropped(ms[i:], "batched send made no progress", nil)
			break
		}
	}
	for i := range ms {
		ms[i].Buffers, ms[i].Addr, ms[i].OOB = nil, nil, nil
	}
}

// dropped counts and logs datagrams that could not be sent.
func (c *batchConn) dropped(ms []ipv4.Message, why string, err error) {
	n := 0
	for _, m := range ms {
		n += len(m.Buffers)
	}
	c.sendErrors.Add(uint64(n))
	c.log.Debug("sfu: "+why, "datagrams", n, "to", ms[0].Addr.String(), "err", err)
}

// Close sends what is queued, then closes the socket. Later writes fail
// with net.ErrClosed.
func (c *batchConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.conn.Close()
	}
	c.closed = true
	c.mu.Unlock()
	c.flush()
	return c.conn.Close()
}

// ReadFrom implements net.PacketConn.
func (c *batchConn) ReadFrom(b []byte) (int, net.Addr, error) { return c.conn.ReadFrom(b) }

// ReadFromAddrPort implements ice.AddrPortReaderWriter.
func (c *batchConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return c.conn.ReadFromUDPAddrPort(b)
}

// LocalAddr implements net.PacketConn.
func (c *batchConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// SetDeadline implements net.PacketConn.
func (c *batchConn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *batchConn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline implements net.PacketConn.
func (c *batchConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
