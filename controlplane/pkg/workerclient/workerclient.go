// Package workerclient keeps one gRPC connection per worker address, so the
// control plane reuses HTTP/2 connections instead of dialling per call. It is
// a cache of connections, not of fleet state: losing it loses nothing.
package workerclient

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// MaxMessageBytes is the largest request the control plane sends a worker;
// the worker's server accepts the same.
const MaxMessageBytes = 64 << 20

// Pool holds connections to workers by address.
type Pool struct {
	opts []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewPool returns an empty pool. Without dial options it uses plaintext
// (workers sit on a private network; put mTLS options here otherwise).
func NewPool(opts ...grpc.DialOption) *Pool {
	if len(opts) == 0 {
		opts = []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Pushed audio (up to 50 MiB of WAV) travels in one message.
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		}
	}
	return &Pool{opts: opts, conns: map[string]*grpc.ClientConn{}}
}

// Client returns the WorkerService client for an address.
func (p *Pool) Client(addr string) (fleetv1.WorkerServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, fmt.Errorf("worker client %s: pool closed", addr)
	}
	cc := p.conns[addr]
	if cc == nil {
		var err error
		// NewClient connects lazily, so this never blocks on the network.
		if cc, err = grpc.NewClient(addr, p.opts...); err != nil {
			return nil, fmt.Errorf("worker client %s: %w", addr, err)
		}
		p.conns[addr] = cc
	}
	return fleetv1.NewWorkerServiceClient(cc), nil
}

// Forget closes the connection to an address (a worker that went away).
func (p *Pool) Forget(addr string) {
	p.mu.Lock()
	cc := p.conns[addr]
	delete(p.conns, addr)
	p.mu.Unlock()
	if cc != nil {
		_ = cc.Close()
	}
}

// Close closes every connection.
func (p *Pool) Close() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
}
