package livekittest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy is a TCP proxy to a Server's signalling endpoint: a participant
// that joins through it keeps its media on the server's own ports, but its
// signalling connection can be cut (Drop) to make its SDK reconnect.
type Proxy struct {
	// URL is the proxy's signalling URL (ws://127.0.0.1:port).
	URL string

	lis    net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and the copiers
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	refuse bool
}

// StartProxy runs a proxy to s until the test ends.
func StartProxy(t testing.TB, s *Server) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &Proxy{URL: "ws://" + lis.Addr().String(), lis: lis, target: strings.TrimPrefix(s.HTTP, "http://"), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Refuse makes the proxy close new connections at once (on), or pass
// them again (off).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// Drop cuts every connection through the proxy. It returns how many it
// cut.
func (p *Proxy) Drop() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
		n++
	}
	return (n + 1) / 2 // both ends of each
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		if p.refusing() {
			_ = in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		p.wg.Add(2)
		go p.copy(in, out)
		go p.copy(out, in)
	}
}

// track registers a connection's two ends; false once the proxy closed.
func (p *Proxy) track(in, out net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_, _ = in.Close(), out.Close()
		return false
	}
	p.conns[in], p.conns[out] = struct{}{}, struct{}{}
	return true
}

func (p *Proxy) refusing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refuse
}

func (p *Proxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	// Either end failing ends both.
	_, _ = dst.Close(), src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.lis.Close()
	p.Drop()
	p.wg.Wait()
}
