package recording

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// Tee is a pipeline.Sink that passes every sample to the session's
// transport and to the recorders attached to it: the recorders get exactly
// the samples the viewers get (own frames, shared idle frames, the
// keyframes of the switches between them). Recorders never block or fail
// the transport's path.
type Tee struct {
	pipeline.Sink
	mu   sync.Mutex // serialises Add and Remove
	recs atomic.Pointer[[]*Recorder]
}

// NewTee wraps the transport's sink.
func NewTee(s pipeline.Sink) *Tee { return &Tee{Sink: s} }

// Add attaches a recorder.
func (t *Tee) Add(r *Recorder) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var cur []*Recorder
	if p := t.recs.Load(); p != nil {
		cur = *p
	}
	next := append(slices.Clone(cur), r)
	t.recs.Store(&next)
}

// Remove detaches a recorder.
func (t *Tee) Remove(r *Recorder) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.recs.Load()
	if p == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*p), func(x *Recorder) bool { return x == r })
	t.recs.Store(&next)
}

// WriteVideo implements pipeline.Sink.
func (t *Tee) WriteVideo(s pipeline.Sample) error {
	err := t.Sink.WriteVideo(s)
	if p := t.recs.Load(); p != nil {
		for _, r := range *p {
			_ = r.WriteVideo(s)
		}
	}
	return err
}

// WriteAudio implements pipeline.Sink.
func (t *Tee) WriteAudio(s pipeline.Sample) error {
	err := t.Sink.WriteAudio(s)
	if p := t.recs.Load(); p != nil {
		for _, r := range *p {
			_ = r.WriteAudio(s)
		}
	}
	return err
}
