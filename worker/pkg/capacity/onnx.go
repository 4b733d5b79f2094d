package capacity

import (
	"errors"
	"fmt"

	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

// ModelOpener opens inference contexts of a lip-sync model on one device,
// fed with a neutral input (a mid-grey face, mel at the contract's middle
// level): the cost of a call does not depend on the values.
type ModelOpener struct {
	Model          *inference.Model
	Device         inference.Device
	IntraOpThreads int
}

// Open implements Opener.
func (o ModelOpener) Open(batch int) (Runner, error) {
	if o.Model == nil {
		return nil, errors.New("no model")
	}
	if fixed := o.Model.Batch(); fixed != 0 && fixed != batch {
		return nil, fmt.Errorf("model %s has a fixed batch of %d: %w", o.Model.Name(), fixed, ErrBatchUnsupported)
	}
	c, err := o.Model.NewContext(inference.ContextOptions{Batch: batch, IntraOpThreads: o.IntraOpThreads, Device: o.Device})
	if err != nil {
		return nil, err
	}
	r := &contextRunner{c: c, mel: make([]float32, c.MelLen()), face: make([]float32, c.FaceLen()), out: make([]float32, c.OutLen())}
	for i := range r.face {
		r.face[i] = 0.5
	}
	return r, nil
}

type contextRunner struct {
	c              *inference.Context
	mel, face, out []float32
}

func (r *contextRunner) Run() error   { return r.c.Run(r.mel, r.face, r.out) }
func (r *contextRunner) Close() error { return r.c.Close() }
