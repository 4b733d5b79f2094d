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

// DefaultSendBatch is the most datagrams one sendmmsg carries: a fan-out
// flushes its queue whenever it holds this many.
const DefaultSendBatch = 64

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
// goes out with sendmmsg when it holds maxBatch datagrams and when the last
// open scope ends. Nothing waits on a timer: a queued datagram leaves at the
// latest when the scope it was queued in ends. Datagrams leave in the order
// their writes returned. Errors of queued datagrams cannot reach their
// writer (it has returned): they are counted and logged, as a lost UDP
// datagram would be; a direct write returns its error.
//
// It implements net.PacketConn and ice.AddrPortReaderWriter (Pion's
// allocation-free path), so the mux uses WriteToAddrPort.
type batchConn struct {
	conn     *net.UDPConn
	batch    batchWriter
	log      *slog.Logger
	maxBatch int

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

	sendErrors atomic.Uint64
	batches    atomic.Uint64 // WriteBatch calls
	batched    atomic.Uint64 // datagrams sent by WriteBatch
}

// newBatchConn wraps conn. maxBatch <= 0 means DefaultSendBatch.
func newBatchConn(conn *net.UDPConn, maxBatch int, log *slog.Logger) *batchConn {
	var bw batchWriter
	if conn.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		bw = ipv4.NewPacketConn(conn)
	} else {
		bw = ipv6.NewPacketConn(conn)
	}
	return newBatchConnWith(conn, bw, maxBatch, log)
}

func newBatchConnWith(conn *net.UDPConn, bw batchWriter, maxBatch int, log *slog.Logger) *batchConn {
	if maxBatch <= 0 {
		maxBatch = DefaultSendBatch
	}
	return &batchConn{conn: conn, batch: bw, log: log, maxBatch: maxBatch}
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
	full := len(c.queue) >= c.maxBatch
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
	for start := 0; start < len(q); start += c.maxBatch {
		c.send(q[start:min(start+c.maxBatch, len(q))])
	}
	c.mu.Lock()
	for i := range q {
		if len(c.free) < 4*c.maxBatch {
			c.free = append(c.free, q[i].buf)
		}
		q[i] = queued{}
	}
	c.spare = q[:0]
	c.mu.Unlock()
}

// send writes q (at most maxBatch) with WriteBatch, resuming after a
// partial write and skipping a datagram the kernel refuses.
func (c *batchConn) send(q []queued) {
	if cap(c.msgs) < len(q) {
		c.msgs = make([]ipv4.Message, len(q))
		c.addrs = make([]net.UDPAddr, len(q))
		c.ips = make([][16]byte, len(q))
		for i := range c.msgs {
			c.msgs[i].Buffers = make([][]byte, 1)
		}
	}
	ms := c.msgs[:len(q)]
	for i, d := range q {
		a := &c.addrs[i]
		ip := d.addr.Addr()
		if ip.Is4() || ip.Is4In6() {
			v4 := ip.Unmap().As4()
			a.IP = c.ips[i][:4]
			copy(a.IP, v4[:])
		} else {
			c.ips[i] = ip.As16()
			a.IP = c.ips[i][:16]
		}
		a.Port, a.Zone = int(d.addr.Port()), ip.Zone()
		ms[i].Buffers[0] = d.buf
		ms[i].Addr = a
		ms[i].N, ms[i].NN, ms[i].Flags = 0, 0, 0
	}
	for i := 0; i < len(ms); {
		n, err := c.batch.WriteBatch(ms[i:], 0)
		if n > 0 {
			c.batches.Add(1)
			c.batched.Add(uint64(n))
			i += n
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				c.sendErrors.Add(uint64(len(ms) - i))
				c.log.Debug("sfu: media socket closed with datagrams queued", "dropped", len(ms)-i)
				break
			}
			// The datagram at i is the one refused: drop it, send the rest.
			c.sendErrors.Add(1)
			c.log.Debug("sfu: batched send failed", "to", q[i].addr.String(), "err", err)
			i++
			continue
		}
		if n <= 0 { // no progress and no error: never spin
			c.sendErrors.Add(uint64(len(ms) - i))
			c.log.Warn("sfu: batched send made no progress", "dropped", len(ms)-i)
			break
		}
	}
	for i := range ms {
		ms[i].Buffers[0], ms[i].Addr = nil, nil
	}
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
