package agent

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// withMedia makes the agent run real media pipelines (the default model on
// the CPU, espeak-ng, media discarded), on the real clock.
func withMedia(t *testing.T) func(*Options) {
	t.Helper()
	ort, err := inference.NewRuntime(inference.RuntimeOptions{})
	if err != nil {
		t.Fatalf("ONNX Runtime: %v (run scripts/setup.sh first)", err)
	}
	t.Cleanup(func() { _ = ort.Close() }) // after the agent's cleanup: registered first
	data, err := onnxgen.DefaultModel()
	if err != nil {
		t.Fatal(err)
	}
	model, err := ort.LoadModelData("default", data)
	if err != nil {
		t.Fatal(err)
	}
	pack, err := avatar.Default()
	if err != nil {
		t.Fatal(err)
	}
	es, err := tts.NewEspeak(t.Context(), tts.EspeakOptions{})
	if err != nil {
		t.Fatalf("espeak-ng: %v (run scripts/setup.sh first)", err)
	}
	return func(o *Options) {
		o.Devices = []*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 1, Cpu: true}}
		o.NewRuntime = func(devs []*fleetv1.GPU, log *slog.Logger) (runtime.Runtime, error) {
			return mediaruntime.New(mediaruntime.Config{Devices: devs, Model: model, Prewarm: 1,
				Avatar: func(string) (*avatar.Pack, error) { return pack, nil },
				TTS:    es, Media: mediaruntime.NewDiscardMedia, Logger: log})
		}
	}
}

// speechWatch polls a session's speech queue and keeps each distinct
// state, until cond holds of the latest.
func speechWatch(t *testing.T, store *fleetstore.Store, session string, timeout time.Duration, seen *[]string, cond func([]fleetstore.SpeechEntry) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		es, err := store.PendingSpeech(t.Context(), session)
		if err != nil {
			t.Fatal(err)
		}
		state := "(empty)"
		if len(es) > 0 {
			state = es[0].Text
		}
		if len(*seen) == 0 || (*seen)[len(*seen)-1] != state {
			*seen = append(*seen, state)
		}
		if cond(es) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("speech queue of %s: saw %q, condition not met within %s", session, *seen, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSpeechQueueFollowsPlayback: the worker shortens a text's entry in the
// durable speech queue as each sentence finishes playing and deletes it
// after the last; a session stopped mid-text leaves the sentence being
// spoken and those after it queued (what a replacement worker speaks); an
// interrupted text's entry, cleared by the control plane, stays gone.
func TestSpeechQueueFollowsPlayback(t *testing.T) {
	r := startAgent(t, "speech-w", withMedia(t))
	ctx := t.Context()
	const text = "One. Two. Three."
	speak := func(session, text string) string {
		t.Helper()
		id, err := r.store.EnqueueSpeech(ctx, session, text, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: session, Text: text, SpeechId: id}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	empty := func(es []fleetstore.SpeechEntry) bool { return len(es) == 0 }

	r.place(t, "s1", 0)
	start := time.Now()
	speak("s1", text)
	var seen []string
	speechWatch(t, r.store, "s1", time.Minute, &seen, empty)
	t.Logf("queue states while speaking: %q in %v", seen, time.Since(start).Round(time.Millisecond))
	order := []string{text, "Two. Three.", "Three.", "(empty)"}
	for i, s := range seen {
		if !slices.Contains(order, s) || i > 0 && slices.Index(order, s) <= slices.Index(order, seen[i-1]) {
			t.Fatalf("queue states %q are not shrinking sentence by sentence (%q)", seen, order)
		}
	}
	if len(seen) < 3 {
		t.Fatalf("queue states %q: the entry did not shrink before it went", seen)
	}

	// Stopped on this worker after the first sentence (as when its slot is
	// lost): the rest stays queued, and stays put.
	speak("s1", text)
	seen = nil
	speechWatch(t, r.store, "s1", time.Minute, &seen, func(es []fleetstore.SpeechEntry) bool {
		return len(es) == 1 && es[0].Text != text
	})
	if _, err := r.client.StopSession(ctx, &fleetv1.StopSessionRequest{SessionId: "s1", Reason: fleetv1.EndReason_END_REASON_WORKER_LOST}); err != nil {
		t.Fatal(err)
	}
	left, err := r.store.PendingSpeech(ctx, "s1")
	if err != nil || len(left) != 1 {
		t.Fatalf("after the stop: %+v %v", left, err)
	}
	time.Sleep(1500 * time.Millisecond) // a sentence's worth of playback
	after, err := r.store.PendingSpeech(ctx, "s1")
	if err != nil || !slices.Equal(after, left) {
		t.Fatalf("the queue moved after the session stopped: %+v, then %+v (%v)", left, after, err)
	}
	t.Logf("left for a replacement worker: %q", left[0].Text)

	// Started again (a fresh pipeline, as on a replacement worker) and sent
	// what is left with its speech id, as the control plane's replay does:
	// the same entry goes on shrinking, and goes.
	sess, _, err := r.store.Session(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	waitSlotFree(t, r, 0)
	if _, err := r.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: sess}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "s1", Text: left[0].Text, SpeechId: left[0].ID}); err != nil {
		t.Fatal(err)
	}
	seen = nil
	speechWatch(t, r.store, "s1", time.Minute, &seen, empty)
	t.Logf("queue states after the replay: %q", seen)
	if i := slices.Index(order, left[0].Text); i < 0 || len(seen) < 2 || seen[0] != left[0].Text {
		t.Fatalf("queue states after the replay: %q", seen)
	}
	if _, _, err := r.store.EndSession(ctx, "s1", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil {
		t.Fatal(err)
	}

	// Interrupted after its first sentence: the control plane clears the
	// queue, then interrupts the worker; nothing comes back.
	waitSlotFree(t, r, 0)
	r.place(t, "s2", 0)
	speak("s2", text)
	seen = nil
	speechWatch(t, r.store, "s2", time.Minute, &seen, func(es []fleetstore.SpeechEntry) bool {
		return len(es) == 1 && es[0].Text != text
	})
	if err := r.store.ClearSpeech(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Interrupt(ctx, &fleetv1.InterruptRequest{SessionId: "s2"}); err != nil {
		t.Fatal(err)
	}
	speak("s2", "Four.")
	seen = nil
	speechWatch(t, r.store, "s2", time.Minute, &seen, empty)
	if slices.Contains(seen, "Two. Three.") || slices.Contains(seen, "Three.") {
		t.Fatalf("an interrupted text came back: %q", seen)
	}
}

// waitSlotFree waits until the worker's runtime has let go of slot's session.
func waitSlotFree(t *testing.T, r *running, slot uint32) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(r.agent.Runtime().Sessions()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slot %d still busy: %v", slot, r.agent.Runtime().Sessions())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
