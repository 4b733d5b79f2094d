package replica_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// TestSpeechQueueThroughAPI: what the REST API is asked to speak is in the
// session's durable speech queue in etcd (the test fleet's workers hold
// sessions without speaking, so nothing is taken off it), an interrupting
// speak replaces it, interrupt empties it, a full queue is 429
// speech_queue_full, and deleting the session takes the queue with it.
func TestSpeechQueueThroughAPI(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 1}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	base := "/v1/sessions/" + s.ID
	queued := func() []string {
		t.Helper()
		es, err := f.Store.PendingSpeech(t.Context(), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Text)
		}
		return out
	}
	speak := func(text string, interrupt bool) testfleet.Response {
		t.Helper()
		return f.MustDo(0, "POST", base+"/speak", testfleet.SessionsKey, apiv1.SpeakRequest{Text: text, Interrupt: interrupt})
	}

	for _, text := range []string{"One. Two.", "Three."} {
		if r := speak(text, false); r.Status != 202 {
			t.Fatalf("speak: %d %s", r.Status, r.Body)
		}
	}
	if got := queued(); !slices.Equal(got, []string{"One. Two.", "Three."}) {
		t.Fatalf("queued %q", got)
	}
	if r := speak("Four.", true); r.Status != 202 {
		t.Fatalf("interrupting speak: %d %s", r.Status, r.Body)
	}
	if got := queued(); !slices.Equal(got, []string{"Four."}) {
		t.Fatalf("after an interrupting speak: %q", got)
	}
	if r := f.MustDo(0, "POST", base+"/interrupt", testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("interrupt: %d %s", r.Status, r.Body)
	}
	if got := queued(); len(got) != 0 {
		t.Fatalf("after interrupt: %q", got)
	}

	long := strings.Repeat("a", 9999)
	fit := fleetstore.MaxPendingSpeech / len(long)
	for range fit {
		if r := speak(long, false); r.Status != 202 {
			t.Fatalf("speak: %d %s", r.Status, r.Body)
		}
	}
	r := speak(long, false)
	var e apiv1.ErrorBody
	r.JSON(t, &e)
	if r.Status != 429 || e.Error.Code != apiv1.CodeSpeechQueueFull {
		t.Fatalf("speak past the queue's bound: %d %q %q, want 429 %q", r.Status, e.Error.Code, e.Error.Message, apiv1.CodeSpeechQueueFull)
	}
	t.Logf("full queue: %s", e.Error.Message)
	if n := len(queued()); n != fit {
		t.Fatalf("%d texts queued, want %d", n, fit)
	}

	if r := f.MustDo(0, "DELETE", base, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if got := queued(); len(got) != 0 {
		t.Fatalf("%d texts outlive the session", len(got))
	}
}
