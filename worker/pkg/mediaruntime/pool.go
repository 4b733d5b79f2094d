package mediaruntime

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
)

// pool keeps prewarmed lip-sync models of one device, so a session start
// does not pay for creating one (an ONNX Runtime session, say).
type pool struct {
	open    func() (lipsync.Model, error)
	what    string // the device, for errors
	mu      sync.Mutex
	free    []lipsync.Model
	max     int
	stopped bool
	// created counts the models made (prewarmed or on a miss).
	created atomic.Uint64
}

func newPool(open func() (lipsync.Model, error), what string, warm, max int) (*pool, error) {
	p := &pool{open: open, what: what, max: max}
	for range warm {
		p.created.Add(1)
		c, err := open()
		if err != nil {
			return nil, errors.Join(fmt.Errorf("prewarm on %s: %w", what, err), p.close())
		}
		p.free = append(p.free, c)
	}
	return p, nil
}

// get takes a prewarmed model or makes one.
func (p *pool) get() (lipsync.Model, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		c := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	p.created.Add(1)
	c, err := p.open()
	if err != nil {
		return nil, fmt.Errorf("lip-sync model on %s: %w", p.what, err)
	}
	return c, nil
}

// put gives a model back; beyond the pool's size (or after close) it is
// closed.
func (p *pool) put(c lipsync.Model) {
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
