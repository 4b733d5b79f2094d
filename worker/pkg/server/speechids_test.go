package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// countingSpeaker records the texts its runtime speaks and fails those
// that start with "fail".
type countingSpeaker struct {
	runtime.Runtime
	mu     sync.Mutex
	spoken []string
}

func (c *countingSpeaker) Speak(ctx context.Context, id, text string, interrupt bool) error {
	if strings.HasPrefix(text, "fail") {
		return fmt.Errorf("speak: %w", runtime.ErrInvalidInput)
	}
	c.mu.Lock()
	c.spoken = append(c.spoken, text)
	c.mu.Unlock()
	return c.Runtime.Speak(ctx, id, text, interrupt)
}

func (c *countingSpeaker) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.spoken
	c.spoken = nil
	return out
}

// TestSpeechIDSpokenOnce: a text sent twice with one speech id (the replay
// after a move and a Speak that raced with it) is spoken once; a text the
// runtime failed to take can be sent again; a session started again here
// (it came back after a move) speaks an id it had taken before.
func TestSpeechIDSpokenOnce(t *testing.T) {
	var rt *countingSpeaker
	f := newFixture(t, func(inner runtime.Runtime) runtime.Runtime {
		rt = &countingSpeaker{Runtime: inner}
		return rt
	})
	ctx := t.Context()
	sess := f.reserve(t, "sess-ids", 0, 0)
	if _, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: sess}); err != nil {
		t.Fatal(err)
	}
	speak := func(text, speechID string) error {
		_, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "sess-ids", Text: text, SpeechId: speechID})
		return err
	}
	for _, step := range []struct{ text, id string }{
		{"one", "00000000000000000001"}, {"one", "00000000000000000001"}, // the same id twice
		{"two", "00000000000000000002"},
		{"no id", ""}, {"no id", ""}, // without ids nothing is deduplicated
	} {
		if err := speak(step.text, step.id); err != nil {
			t.Fatalf("speak %q (%s): %v", step.text, step.id, err)
		}
	}
	if got, want := fmt.Sprint(rt.take()), "[one two no id no id]"; got != want {
		t.Errorf("spoken %s, want %s", got, want)
	}
	if err := speak("fail once", "00000000000000000003"); err == nil {
		t.Fatal("a failing text was taken")
	}
	if err := speak("fine now", "00000000000000000003"); err != nil {
		t.Fatalf("the id of a text that failed, sent again: %v", err)
	}
	if got, want := fmt.Sprint(rt.take()), "[fine now]"; got != want {
		t.Errorf("spoken %s, want %s", got, want)
	}
	// The session leaves and comes back: what it had taken is spoken again.
	if _, err := f.client.StopSession(ctx, &fleetv1.StopSessionRequest{SessionId: "sess-ids"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: sess}); err != nil {
		t.Fatal(err)
	}
	if err := speak("one", "00000000000000000001"); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(rt.take()), "[one]"; got != want {
		t.Errorf("after starting again, spoken %s, want %s", got, want)
	}
}

func TestAcceptedSpeechBounds(t *testing.T) {
	var a acceptedSpeech
	for i := range maxSpeechIDsPerSession + 10 {
		if !a.claim("s", fmt.Sprint(i)) {
			t.Fatalf("id %d claimed twice", i)
		}
	}
	if n := len(a.ids["s"]); n != maxSpeechIDsPerSession {
		t.Errorf("%d ids kept for one session, want %d", n, maxSpeechIDsPerSession)
	}
	if !a.claim("s", "0") {
		t.Error("the oldest id was not let go")
	}
	if a.claim("s", fmt.Sprint(maxSpeechIDsPerSession+9)) {
		t.Error("the newest id was let go")
	}
	for i := range maxSpeechSessions + 100 {
		a.claim(fmt.Sprint("session-", i), "x")
		if i%3 == 0 {
			a.forget(fmt.Sprint("session-", i))
		}
	}
	if len(a.ids) > maxSpeechSessions || len(a.order) > 2*maxSpeechSessions+1 {
		t.Errorf("%d sessions and %d names kept, want at most %d", len(a.ids), len(a.order), maxSpeechSessions)
	}
}
