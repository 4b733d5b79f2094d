package mediaruntime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/idleloop"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// Stop implements runtime.Runtime: it cancels the session's pipeline and
// waits (until ctx ends) for it to release its encoders and context.
func (r *Runtime) Stop(ctx context.Context, id string, reason fleetv1.EndReason) error {
	r.mu.Lock()
	s := r.removeLocked(id)
	r.mu.Unlock()
	if s == nil {
		return fmt.Errorf("stop %s: %w", id, runtime.ErrNotFound)
	}
	s.cancel()
	r.log.Info("session stopped", "session", id, "reason", reason.String())
	select {
	case <-s.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: waiting for the pipeline: %w", id, ctx.Err())
	}
}

// inputErr marks the pipeline's input errors as the caller's.
func inputErr(err error) error {
	if errors.Is(err, pipeline.ErrBadAudio) || errors.Is(err, pipeline.ErrQueueFull) {
		return fmt.Errorf("%w: %w", runtime.ErrInvalidInput, err)
	}
	return err
}

// Speak implements runtime.Runtime.
func (r *Runtime) Speak(ctx context.Context, id, text string, interrupt bool) error {
	return r.SpeakTracked(ctx, id, text, interrupt, nil)
}

// SpeakTracked is Speak, and progress is told how far the text has been
// spoken (pipeline.Pipeline.SpeakTracked): the worker keeps the session's
// durable speech queue in etcd up to date with it.
func (r *Runtime) SpeakTracked(_ context.Context, id, text string, interrupt bool, progress func(remaining string)) error {
	if err := runtime.ValidateText(text); err != nil {
		return fmt.Errorf("speak %s: %w", id, err)
	}
	s, err := r.get(id)
	if err != nil {
		return err
	}
	speak := func() error { return s.p().SpeakTracked(text, interrupt, progress) }
	if err := r.overBudget(id, speak(), speak); err != nil {
		return fmt.Errorf("speak %s: %w", id, inputErr(err))
	}
	s.touch(r.now())
	return nil
}

// PushAudio implements runtime.Runtime.
func (r *Runtime) PushAudio(_ context.Context, id string, wav []byte, interrupt bool) error {
	if err := runtime.ValidateWAVHeader(wav); err != nil {
		return fmt.Errorf("push audio %s: %w", id, err)
	}
	s, err := r.get(id)
	if err != nil {
		return err
	}
	push := func() error { return s.p().PushAudio(wav, interrupt) }
	if err := r.overBudget(id, push(), push); err != nil {
		return fmt.Errorf("push audio %s: %w", id, inputErr(err))
	}
	s.touch(r.now())
	return nil
}

// PushPCM appends live 16 kHz mono audio to a session's speech (what the
// transport's MediaHooks.PushPCM does, by id).
func (r *Runtime) PushPCM(id string, pcm []float32) error {
	s, err := r.get(id)
	if err != nil {
		return err
	}
	s.touch(r.now())
	if err := s.p().PushPCM(pcm); err != nil {
		return fmt.Errorf("push pcm %s: %w", id, inputErr(err))
	}
	return nil
}

// Interrupt implements runtime.Runtime.
func (r *Runtime) Interrupt(_ context.Context, id string) error {
	s, err := r.get(id)
	if err != nil {
		return err
	}
	s.p().Interrupt()
	return nil
}

// RequestKeyframe asks a session's encoder for a keyframe (for the SFU).
func (r *Runtime) RequestKeyframe(id string) error {
	s, err := r.get(id)
	if err != nil {
		return err
	}
	s.p().RequestKeyframe()
	return nil
}

// Stats are one session's figures.
type Stats struct {
	// Started is when the session started (lifetime clock).
	Started time.Time
	// Frames, Keyframes and AudioPackets count the samples sent; Inferred
	// the video frames the model rendered; Shared the video frames sent
	// from the avatar's shared idle loop.
	Frames, Keyframes, Inferred, Shared, AudioPackets uint64
	// Speaking: the last frame sent carried speech.
	Speaking bool
	// Viewers is the transport's last reported viewer count.
	Viewers int
}

// IdleLoops reports the shared idle loops (zero with NoIdleShare).
func (r *Runtime) IdleLoops() idleloop.Stats {
	if r.idle == nil {
		return idleloop.Stats{}
	}
	return r.idle.Stats()
}

// Stats reports a running session's figures.
func (r *Runtime) Stats(id string) (Stats, error) {
	s, err := r.get(id)
	if err != nil {
		return Stats{}, err
	}
	return s.stats(), nil
}

func (s *session) stats() Stats {
	st := s.p().Status()
	s.mu.Lock()
	viewers := s.viewers
	s.mu.Unlock()
	return Stats{Started: s.started, Frames: st.Frames, Keyframes: st.Keyframes, Inferred: st.Inferred,
		Shared: st.Shared, AudioPackets: st.AudioPackets, Speaking: st.Speaking, Viewers: viewers}
}

// Status implements runtime.Runtime.
func (r *Runtime) Status(id string) (runtime.Status, error) {
	s, err := r.get(id)
	if err != nil {
		return runtime.Status{}, err
	}
	st := s.p().Status()
	out := runtime.Status{State: fleetv1.SessionState_SESSION_STATE_READY, Speaking: st.Speaking, FramesSent: st.Frames}
	if lk, ok := s.media.(LiveKitReporter); ok {
		out.LiveKit = lk.LiveKitStatus()
	}
	return out, nil
}

// Sessions implements runtime.Runtime.
func (r *Runtime) Sessions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.sessions))
	for id := range r.sessions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Ended implements runtime.Runtime.
func (r *Runtime) Ended() <-chan runtime.Ended { return r.ended }

// Close implements runtime.Runtime: it stops every pipeline, waits for
// them, and frees the pooled inference contexts.
func (r *Runtime) Close(_ context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for id, s := range r.sessions {
		s.cancel()
		r.removeLocked(id)
	}
	r.mu.Unlock()
	close(r.done)
	r.wg.Wait() // every media goroutine, the only senders on speaking, has returned
	close(r.ended)
	close(r.speaking)
	r.recEndMu.Lock()
	r.recEndClosed = true
	close(r.recEnded)
	r.recEndMu.Unlock()
	return r.closePools()
}

func (r *Runtime) closePools() error {
	if r.idle != nil {
		r.idle.Close() // after the sessions: it stops encodings in flight
	}
	var errs []error
	for gpu, p := range r.pools {
		if err := p.close(); err != nil {
			errs = append(errs, fmt.Errorf("mediaruntime: GPU %d contexts: %w", gpu, err))
		}
	}
	for gpu, e := range r.batchers { // after the pools: their handles are closed
		if err := e.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mediaruntime: GPU %d batching executor: %w", gpu, err))
		}
	}
	return errors.Join(errs...)
}
