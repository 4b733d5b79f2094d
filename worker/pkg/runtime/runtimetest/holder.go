// Package runtimetest holds Holder, a stand-in session runtime for tests:
// a session only holds its slot and reports itself ready, speech is
// validated and accepted but produces no media. The worker's production
// runtime is the media pipeline (worker/pkg/mediaruntime); tests of the
// fleet around it (agent, gRPC server, the in-process test fleet) run on
// Holder, which keeps the Runtime contract exactly.
package runtimetest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// Holder is the stand-in session runtime of the tests: a session
// only holds its slot and reports itself ready; speech is validated and
// accepted but produces no media. It keeps
// the runtime.Runtime contract exactly (slot accounting, idempotent start, the runtime.Ended
// notification) so everything built on top is exercised for real.
type Holder struct {
	log     *slog.Logger
	devices map[uint32]uint32 // GPU index → slots

	mu       sync.Mutex
	sessions map[string]*heldSession
	bySlot   map[slotRef]string
	closed   bool

	ended    chan runtime.Ended
	speaking chan runtime.Speaking
	done     chan struct{}  // closed by Close: pending sends give up
	senders  sync.WaitGroup // End and EmitSpeaking calls still sending
}

type slotRef struct{ gpu, slot uint32 }

type heldSession struct {
	sess   *fleetv1.Session
	spoken uint64 // speech requests accepted, for logs
}

// endedBuffer lets End return without a reader for a while; the agent reads
// continuously, so this only absorbs bursts.
const endedBuffer = 64

// NewHolder returns a Holder for the given devices (their slots bound which
// GPU/slot pairs a session may name).
func NewHolder(devices []*fleetv1.GPU, log *slog.Logger) *Holder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	devs := make(map[uint32]uint32, len(devices))
	for _, d := range devices {
		devs[d.GetIndex()] = d.GetSlots()
	}
	return &Holder{
		log:      log,
		devices:  devs,
		sessions: make(map[string]*heldSession),
		bySlot:   make(map[slotRef]string),
		ended:    make(chan runtime.Ended, endedBuffer),
		speaking: make(chan runtime.Speaking, endedBuffer),
		done:     make(chan struct{}),
	}
}

var (
	_ runtime.Runtime          = (*Holder)(nil)
	_ runtime.SpeakingReporter = (*Holder)(nil)
)

// Start implements runtime.Runtime.
func (h *Holder) Start(_ context.Context, sess *fleetv1.Session) error {
	id := sess.GetId()
	slots, ok := h.devices[sess.GetGpu()]
	if !ok {
		return fmt.Errorf("start %s: no GPU %d on this worker: %w", id, sess.GetGpu(), runtime.ErrInvalidInput)
	}
	if sess.GetSlot() >= slots {
		return fmt.Errorf("start %s: GPU %d has %d slots, not slot %d: %w", id, sess.GetGpu(), slots, sess.GetSlot(), runtime.ErrInvalidInput)
	}
	ref := slotRef{sess.GetGpu(), sess.GetSlot()}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("start %s: %w", id, runtime.ErrClosed)
	}
	if cur, ok := h.sessions[id]; ok {
		if (slotRef{cur.sess.GetGpu(), cur.sess.GetSlot()}) != ref {
			return fmt.Errorf("start %s: already running on GPU %d slot %d: %w", id, cur.sess.GetGpu(), cur.sess.GetSlot(), runtime.ErrInvalidInput)
		}
		return nil // a retried start of the same session
	}
	if other, ok := h.bySlot[ref]; ok {
		return fmt.Errorf("start %s: GPU %d slot %d still held by %s: %w", id, ref.gpu, ref.slot, other, runtime.ErrSlotBusy)
	}
	h.sessions[id] = &heldSession{sess: sess}
	h.bySlot[ref] = id
	h.log.Info("session holds its slot", "session", id, "gpu", ref.gpu, "slot", ref.slot)
	return nil
}

// Stop implements runtime.Runtime.
func (h *Holder) Stop(_ context.Context, id string, reason fleetv1.EndReason) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.removeLocked(id); !ok {
		return fmt.Errorf("stop %s: %w", id, runtime.ErrNotFound)
	}
	h.log.Info("session stopped", "session", id, "reason", reason.String())
	return nil
}

// End ends a running session on the runtime's own initiative and reports it
// on runtime.Ended — what the media pipeline does on an error or an idle timeout.
// Tests use it to exercise that path.
func (h *Holder) End(id string, state fleetv1.SessionState, reason fleetv1.EndReason, message string) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fmt.Errorf("end %s: %w", id, runtime.ErrClosed)
	}
	if _, ok := h.removeLocked(id); !ok {
		h.mu.Unlock()
		return fmt.Errorf("end %s: %w", id, runtime.ErrNotFound)
	}
	h.senders.Add(1)
	h.mu.Unlock()
	defer h.senders.Done()
	h.log.Info("session ended on its own", "session", id, "state", state.String(), "reason", reason.String())
	select {
	case h.ended <- runtime.Ended{SessionID: id, State: state, Reason: reason, Message: message}:
		return nil
	case <-h.done:
		return fmt.Errorf("end %s: %w", id, runtime.ErrClosed)
	}
}

// EmitSpeaking reports a speaking change of a running session on runtime.Speaking,
// as a media runtime does when speech starts or ends playing. A Holder
// produces no media, so only tests call it, to exercise the worker's
// speaking events.
func (h *Holder) EmitSpeaking(id string, started bool, mediaTime time.Duration) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return fmt.Errorf("emit speaking %s: %w", id, runtime.ErrClosed)
	}
	s, err := h.session(id)
	if err != nil {
		h.mu.Unlock()
		return fmt.Errorf("emit speaking: %w", err)
	}
	h.senders.Add(1)
	h.mu.Unlock()
	defer h.senders.Done()
	select {
	case h.speaking <- runtime.Speaking{SessionID: id, Started: started, MediaTime: mediaTime, Session: s.sess}:
		return nil
	case <-h.done:
		return fmt.Errorf("emit speaking %s: %w", id, runtime.ErrClosed)
	}
}

// Speaking implements SpeakingReporter: what EmitSpeaking sends.
func (h *Holder) Speaking() <-chan runtime.Speaking { return h.speaking }

func (h *Holder) removeLocked(id string) (*heldSession, bool) {
	s, ok := h.sessions[id]
	if !ok {
		return nil, false
	}
	delete(h.sessions, id)
	delete(h.bySlot, slotRef{s.sess.GetGpu(), s.sess.GetSlot()})
	return s, true
}

func (h *Holder) session(id string) (*heldSession, error) {
	s, ok := h.sessions[id]
	if !ok {
		return nil, fmt.Errorf("session %s: %w", id, runtime.ErrNotFound)
	}
	return s, nil
}

// Speak implements Runtime: the text is validated and accepted.
func (h *Holder) Speak(_ context.Context, id, text string, _ bool) error {
	if err := runtime.ValidateText(text); err != nil {
		return fmt.Errorf("speak %s: %w", id, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, err := h.session(id)
	if err != nil {
		return err
	}
	s.spoken++
	return nil
}

// PushAudio implements Runtime: the WAV header is validated and accepted.
func (h *Holder) PushAudio(_ context.Context, id string, wav []byte, _ bool) error {
	if err := runtime.ValidateWAVHeader(wav); err != nil {
		return fmt.Errorf("push audio %s: %w", id, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, err := h.session(id)
	if err != nil {
		return err
	}
	s.spoken++
	return nil
}

// Interrupt implements runtime.Runtime; there is never queued speech to drop.
func (h *Holder) Interrupt(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.session(id)
	return err
}

// Status implements Runtime: a held session is always ready and silent.
func (h *Holder) Status(id string) (runtime.Status, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := h.session(id); err != nil {
		return runtime.Status{}, err
	}
	return runtime.Status{State: fleetv1.SessionState_SESSION_STATE_READY}, nil
}

// Sessions implements runtime.Runtime.
func (h *Holder) Sessions() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.sessions))
	for id := range h.sessions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Ended implements runtime.Runtime.
func (h *Holder) Ended() <-chan runtime.Ended { return h.ended }

// Close implements runtime.Runtime.
func (h *Holder) Close(_ context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	clear(h.sessions)
	clear(h.bySlot)
	h.mu.Unlock()
	close(h.done)
	// No End can start now (closed is set); wait for those mid-send so the
	// channel is closed with no sender left.
	h.senders.Wait()
	close(h.ended)
	close(h.speaking)
	return nil
}
