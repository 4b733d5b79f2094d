package runtimetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

func newHolder(t *testing.T) *Holder {
	t.Helper()
	h := NewHolder([]*fleetv1.GPU{{Index: 0, Slots: 2}, {Index: 1, Slots: 1}}, nil)
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

func sess(id string, gpu, slot uint32) *fleetv1.Session {
	return &fleetv1.Session{Id: id, Gpu: gpu, Slot: slot}
}

func TestHolderStart(t *testing.T) {
	ctx := t.Context()
	h := newHolder(t)
	if err := h.Start(ctx, sess("a", 0, 0)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		s    *fleetv1.Session
		want error
	}{
		{"same session again", sess("a", 0, 0), nil},
		{"same session other slot", sess("a", 0, 1), runtime.ErrInvalidInput},
		{"slot held by another", sess("b", 0, 0), runtime.ErrSlotBusy},
		{"unknown gpu", sess("c", 7, 0), runtime.ErrInvalidInput},
		{"slot out of range", sess("c", 1, 1), runtime.ErrInvalidInput},
		{"free slot", sess("d", 1, 0), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := h.Start(ctx, tt.s); !errors.Is(err, tt.want) {
				t.Fatalf("Start = %v, want %v", err, tt.want)
			}
		})
	}
	if got := strings.Join(h.Sessions(), ","); got != "a,d" {
		t.Fatalf("Sessions = %s", got)
	}
	st, err := h.Status("a")
	if err != nil || st.State != fleetv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("runtime.Status = %+v, %v", st, err)
	}
	if err := h.Stop(ctx, "a", fleetv1.EndReason_END_REASON_DELETED); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(ctx, "a", fleetv1.EndReason_END_REASON_DELETED); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("second Stop = %v, want runtime.ErrNotFound", err)
	}
	// The slot is free again.
	if err := h.Start(ctx, sess("b", 0, 0)); err != nil {
		t.Fatal(err)
	}
}

func TestHolderSpeechValidation(t *testing.T) {
	ctx := t.Context()
	h := newHolder(t)
	if err := h.Start(ctx, sess("a", 0, 0)); err != nil {
		t.Fatal(err)
	}
	riff := append([]byte("RIFF\x00\x00\x00\x00WAVE"), make([]byte, 32)...)
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"text ok", func() error { return h.Speak(ctx, "a", "hello", false) }, nil},
		{"text max length", func() error { return h.Speak(ctx, "a", strings.Repeat("ü", runtime.MaxTextChars), false) }, nil},
		{"text empty", func() error { return h.Speak(ctx, "a", "", false) }, runtime.ErrInvalidInput},
		{"text too long", func() error { return h.Speak(ctx, "a", strings.Repeat("a", runtime.MaxTextChars+1), false) }, runtime.ErrInvalidInput},
		{"text not utf8", func() error { return h.Speak(ctx, "a", "\xff\xfe", false) }, runtime.ErrInvalidInput},
		{"text unknown session", func() error { return h.Speak(ctx, "zz", "hi", false) }, runtime.ErrNotFound},
		{"wav ok", func() error { return h.PushAudio(ctx, "a", riff, true) }, nil},
		{"wav short", func() error { return h.PushAudio(ctx, "a", []byte("RIFF"), false) }, runtime.ErrInvalidInput},
		{"wav wrong magic", func() error { return h.PushAudio(ctx, "a", []byte("RIFX\x00\x00\x00\x00WAVE"), false) }, runtime.ErrInvalidInput},
		{"wav too big", func() error { return h.PushAudio(ctx, "a", make([]byte, runtime.MaxWAVBytes+1), false) }, runtime.ErrInvalidInput},
		{"wav unknown session", func() error { return h.PushAudio(ctx, "zz", riff, false) }, runtime.ErrNotFound},
		{"interrupt", func() error { return h.Interrupt(ctx, "a") }, nil},
		{"interrupt unknown", func() error { return h.Interrupt(ctx, "zz") }, runtime.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestHolderEndedAndClose(t *testing.T) {
	ctx := t.Context()
	h := newHolder(t)
	if err := h.Start(ctx, sess("a", 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx, sess("b", 0, 1)); err != nil {
		t.Fatal(err)
	}
	if err := h.End("a", fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_ERROR, "model error"); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-h.Ended():
		want := runtime.Ended{SessionID: "a", State: fleetv1.SessionState_SESSION_STATE_FAILED, Reason: fleetv1.EndReason_END_REASON_ERROR, Message: "model error"}
		if e != want {
			t.Fatalf("runtime.Ended = %+v, want %+v", e, want)
		}
	case <-time.After(time.Second):
		t.Fatal("no runtime.Ended notification")
	}
	if err := h.End("a", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_IDLE_TIMEOUT, ""); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("second End = %v, want runtime.ErrNotFound", err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-h.Ended(); ok {
		t.Fatal("runtime.Ended not closed after Close (and Close must not report stopped sessions)")
	}
	if len(h.Sessions()) != 0 {
		t.Fatal("sessions left after Close")
	}
	if err := h.Start(ctx, sess("c", 0, 0)); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
	if err := h.End("b", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_IDLE_TIMEOUT, ""); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("End after Close = %v", err)
	}
}

// TestHolderCloseWithBlockedEnd: an End blocked on a full runtime.Ended channel
// (nobody reading) must not keep Close from returning.
func TestHolderCloseWithBlockedEnd(t *testing.T) {
	ctx := t.Context()
	n := endedBuffer + 1
	h := NewHolder([]*fleetv1.GPU{{Index: 0, Slots: uint32(n)}}, nil)
	for i := range n {
		if err := h.Start(ctx, sess(fmt.Sprint(i), 0, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var closedErrs atomic.Int32
	for i := range n {
		wg.Go(func() {
			if err := h.End(fmt.Sprint(i), fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_IDLE_TIMEOUT, ""); errors.Is(err, runtime.ErrClosed) {
				closedErrs.Add(1)
			}
		})
	}
	time.Sleep(50 * time.Millisecond) // let the buffer fill and one End block
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if closedErrs.Load() < 1 {
		t.Fatalf("expected the blocked End to give up with runtime.ErrClosed")
	}
}

// TestHolderConcurrentStartsOneSlot: of many sessions racing for one slot,
// exactly one holds it.
func TestHolderConcurrentStartsOneSlot(t *testing.T) {
	h := newHolder(t)
	var wg sync.WaitGroup
	var won atomic.Int32
	for i := range 32 {
		wg.Go(func() {
			if h.Start(t.Context(), sess(fmt.Sprint("s", i), 1, 0)) == nil {
				won.Add(1)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || len(h.Sessions()) != 1 {
		t.Fatalf("%d starts won, %d sessions", won.Load(), len(h.Sessions()))
	}
}

// TestHolderEmitSpeaking: EmitSpeaking reports a running session's change
// with its record, refuses unknown sessions, and runtime.Speaking closes with Close.
func TestHolderEmitSpeaking(t *testing.T) {
	ctx := t.Context()
	h := newHolder(t)
	a := sess("a", 0, 0)
	if err := h.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := h.EmitSpeaking("zz", true, 0); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("EmitSpeaking for a missing session = %v", err)
	}
	if err := h.EmitSpeaking("a", true, 40*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := h.EmitSpeaking("a", false, 520*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, want := range []runtime.Speaking{
		{SessionID: "a", Started: true, MediaTime: 40 * time.Millisecond, Session: a},
		{SessionID: "a", Started: false, MediaTime: 520 * time.Millisecond, Session: a},
	} {
		if got := <-h.Speaking(); got != want {
			t.Fatalf("Speaking = %+v, want %+v", got, want)
		}
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-h.Speaking(); ok {
		t.Fatal("runtime.Speaking not closed after Close")
	}
	if err := h.EmitSpeaking("a", true, 0); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("EmitSpeaking after Close = %v", err)
	}
}
