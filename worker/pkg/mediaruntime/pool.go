package mediaruntime

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

// pool keeps prewarmed inference contexts of one device, so a session start
// does not pay for creating an ONNX Runtime session.
type pool struct {
	model   *inference.Model
	opts    inference.ContextOptions
	mu      sync.Mutex
	free    []*inference.Context
	max     int
	stopped bool
	// created counts the contexts made (prewarmed or on a miss).
	created atomic.Uint64
}

func newPool(m *inference.Model, opts inference.ContextOptions, warm, max int) (*pool, error) {
	p := &pool{model: m, opts: opts, max: max}
	for range warm {
		p.created.Add(1)
		c, err := m.NewContext(opts)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("prewarm on %v: %w", opts.Device, err), p.close())
		}
		p.free = append(p.free, c)
	}
	return p, nil
}

// get takes a prewarmed context or makes one.
func (p *pool) get() (*inference.Context, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		c := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	p.created.Add(1)
	c, err := p.model.NewContext(p.opts)
	if err != nil {
		return nil, fmt.Errorf("inference context on %v: %w", p.opts.Device, err)
	}
	return c, nil
}

// put gives a context back; beyond the pool's size (or after close) it is
// closed.
func (p *pool) put(c *inference.Context) {
	p.mu.Lock()
	if !p.stopped && len(p.free) < p.max {
		p.free = append(p.free, c)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	_ = c.Close()
}

func (p *pool) close() error {
	p.mu.Lock()
	free := p.free
	p.free, p.stopped = nil, true
	p.mu.Unlock()
	var errs []error
	for _, c := range free {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
