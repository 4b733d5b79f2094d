package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
)

// TestEngineRuntime builds the binary's media runtime for a device that
// claims to be a GPU: with the CPU-only ONNX Runtime set up here it falls
// back to the CPU; either way a session runs and sends frames to the
// headless transport, and its lifetime limits come from the record.
func TestEngineRuntime(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := openEngine(t.Context(), mediaConfig{tts: ttsEspeak, prewarm: prewarmSlots, intraOpThreads: 1}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := e.close(); err != nil {
			t.Error(err)
		}
	}()
	rt, err := e.newRuntime([]*fleetv1.GPU{{Index: 0, Name: "fake-gpu", Slots: 1}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rt.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	if _, ok := rt.(*mediaruntime.Runtime); !ok {
		t.Fatalf("runtime %T", rt)
	}
	if err := rt.Start(t.Context(), &fleetv1.Session{Id: "s", Avatar: "default"}); err != nil {
		t.Fatal(err)
	}
	fleettest.Eventually(t, 10*time.Second, "frames", func() bool {
		st, err := rt.Status("s")
		return err == nil && st.FramesSent > 2
	})
	if err := rt.Stop(t.Context(), "s", fleetv1.EndReason_END_REASON_DELETED); err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(t.Context(), &fleetv1.Session{Id: "x", Avatar: "nobody"}); !errors.Is(err, avatar.ErrNotFound) {
		t.Errorf("start with an unknown avatar: %v", err)
	}
}
