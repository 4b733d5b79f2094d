package recording

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

type writerAt = io.WriterAt

// output is what the muxer writes to: the object, counting bytes. The
// muxer's own goroutine stops for good on a write error (and a later
// sample would then block), so output keeps the first error and swallows
// later writes; the Recorder fails the recording with that error when it
// finishes.
type output struct {
	obj Object
	n   atomic.Int64
	mu  sync.Mutex
	err error
}

func (o *output) Write(p []byte) (int, error) {
	if o.error() != nil {
		return len(p), nil
	}
	n, err := o.obj.Write(p)
	o.n.Add(int64(n))
	if err != nil {
		o.fail(fmt.Errorf("write to the store: %w", err))
	}
	return len(p), nil
}

// Close is the muxer's end of the file: the Recorder commits the object.
func (o *output) Close() error { return nil }

func (o *output) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

func (o *output) error() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// outputAt is output for a seekable object.
type outputAt struct {
	*output
	at io.WriterAt
}

func (o *outputAt) WriteAt(p []byte, off int64) (int, error) {
	if o.error() != nil {
		return len(p), nil
	}
	if _, err := o.at.WriteAt(p, off); err != nil {
		o.fail(fmt.Errorf("write to the store: %w", err))
	}
	return len(p), nil
}
