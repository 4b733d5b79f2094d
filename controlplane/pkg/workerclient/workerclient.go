// Package workerclient keeps one gRPC connection per worker, so the control
// plane reuses HTTP/2 connections instead of dialling per call. It is a
// cache of connections, not of fleet state: losing it loses nothing.
//
// With fleet TLS (NewTLSPool) every connection is mutual TLS, and each one
// verifies that the worker at the other end is the worker the caller meant:
// its certificate must chain to the fleet CA, cover the dialled host, and
// name that worker's id (fleetpki.WorkerURI). A worker that took over
// another's address cannot answer for it.
package workerclient

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetpki"
)

// MaxMessageBytes is the largest request the control plane sends a worker;
// the worker's server accepts the same.
const MaxMessageBytes = 64 << 20

// Pool holds connections to workers by worker id and address.
type Pool struct {
	opts []grpc.DialOption
	tls  *fleetpki.Material // nil: plaintext

	mu    sync.Mutex
	conns map[key]*grpc.ClientConn
}

type key struct{ id, addr string }

// NewPool returns an empty pool that dials in plaintext (a fleet started
// with fleet TLS explicitly off). Extra dial options come after the pool's.
func NewPool(opts ...grpc.DialOption) *Pool {
	return &Pool{opts: append(defaultOptions(), opts...), conns: map[key]*grpc.ClientConn{}}
}

// NewTLSPool returns an empty pool that dials every worker with mutual TLS
// from m, verifying each worker's identity.
func NewTLSPool(m *fleetpki.Material, opts ...grpc.DialOption) *Pool {
	return &Pool{opts: append(defaultOptions(), opts...), tls: m, conns: map[key]*grpc.ClientConn{}}
}

func defaultOptions() []grpc.DialOption {
	// Pushed audio (up to 50 MiB of WAV) travels in one message.
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageBytes))}
}

// Client returns the WorkerService client of worker id at addr.
func (p *Pool) Client(id, addr string) (fleetv1.WorkerServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, fmt.Errorf("worker client %s at %s: pool closed", id, addr)
	}
	k := key{id, addr}
	cc := p.conns[k]
	if cc == nil {
		creds := insecure.NewCredentials()
		if p.tls != nil {
			creds = credentials.NewTLS(p.tls.ControlPlaneClient(id))
		}
		var err error
		// NewClient connects lazily, so this never blocks on the network.
		if cc, err = grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, p.opts...)...); err != nil {
			return nil, fmt.Errorf("worker client %s at %s: %w", id, addr, err)
		}
		p.conns[k] = cc
	}
	return fleetv1.NewWorkerServiceClient(cc), nil
}

// Forget closes the connection to worker id at addr (a worker that went
// away).
func (p *Pool) Forget(id, addr string) {
	p.mu.Lock()
	k := key{id, addr}
	cc := p.conns[k]
	delete(p.conns, k)
	p.mu.Unlock()
	if cc != nil {
		_ = cc.Close()
	}
}

// ForgetWorker closes every connection to worker id, whatever its address:
// the registry calls it when the worker's record disappears (the worker
// deregistered, was lost or was fenced), so connections to workers that
// are gone do not pile up. A later call dials afresh.
func (p *Pool) ForgetWorker(id string) {
	p.mu.Lock()
	var closing []*grpc.ClientConn
	for k, cc := range p.conns {
		if k.id == id {
			closing = append(closing, cc)
			delete(p.conns, k)
		}
	}
	p.mu.Unlock()
	for _, cc := range closing {
		_ = cc.Close()
	}
}

// Len is the number of open connections.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
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
