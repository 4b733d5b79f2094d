package replica_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
)

// sessionStream follows GET /v1/sessions/{id}/events in the background.
type sessionStream struct {
	mu     sync.Mutex
	events []whepviewer.Event
	err    error
}

func (s *sessionStream) snapshot() ([]whepviewer.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]whepviewer.Event(nil), s.events...), s.err
}

func followSession(t *testing.T, eventsURL, token, lastID string) *sessionStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &sessionStream{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := whepviewer.StreamEvents(ctx, nil, eventsURL, token, lastID, func(e whepviewer.Event) {
			s.mu.Lock()
			s.events = append(s.events, e)
			s.mu.Unlock()
		})
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// TestSessionEventsWithViewerToken: GET /v1/sessions/{id}/events takes the
// session's viewer token (header or ?access_token=), serves that session's
// events only, refuses other sessions' tokens and no token, and resumes
// after Last-Event-ID.
func TestSessionEventsWithViewerToken(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 4}}})
	a := createSession(t, f, 0, testfleet.SessionsKey)
	b := createSession(t, f, 0, testfleet.SessionsKey)
	base := f.URL(0) + "/v1/sessions/"

	for _, tt := range []struct {
		name, url, token string
		want             int
	}{
		{"no token", base + a.ID + "/events", "", 401},
		{"other session's token", base + a.ID + "/events", b.ViewerToken, 403},
		{"forged token", base + a.ID + "/events", "v1.not-a-token", 401},
		{"bad session id", base + "no%20such/events", a.ViewerToken, 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := whepviewer.StreamEvents(ctx, nil, tt.url, tt.token, "", func(whepviewer.Event) {})
			var se *whepviewer.StatusError
			if !errors.As(err, &se) || se.Status != tt.want {
				t.Fatalf("err %v, want status %d", err, tt.want)
			}
		})
	}

	byHeader := followSession(t, base+a.ID+"/events", a.ViewerToken, "")
	byQuery := followSession(t, base+a.ID+"/events?access_token="+url.QueryEscape(a.ViewerToken), "", "")
	time.Sleep(300 * time.Millisecond) // let the streams subscribe

	holder := f.Worker("w").Agent.Runtime().(*runtimetest.Holder)
	for _, id := range []string{b.ID, a.ID, b.ID} {
		if err := holder.EmitSpeaking(id, true, 40*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if r := f.MustDo(0, "DELETE", "/v1/sessions/"+b.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete b: %d", r.Status)
	}
	if r := f.MustDo(0, "DELETE", "/v1/sessions/"+a.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete a: %d", r.Status)
	}
	for name, s := range map[string]*sessionStream{"header": byHeader, "query": byQuery} {
		f.Eventually(10*time.Second, name+" stream sees a's speaking and end", func() bool {
			evs, _ := s.snapshot()
			return hasTypes(evs, "session.speaking_started", "session.ended")
		})
		evs, err := s.snapshot()
		if err != nil {
			t.Fatalf("%s stream: %v", name, err)
		}
		for _, e := range evs {
			var ev apiv1.Event
			if err := json.Unmarshal(e.Data, &ev); err != nil {
				t.Fatalf("%s: event %s: %v", name, e.Type, err)
			}
			if ev.SessionID != a.ID || e.ID == "" {
				t.Fatalf("%s stream served an event of session %q (id %q), want only %s", name, ev.SessionID, e.ID, a.ID)
			}
		}
	}

	// Resume after the first event: the later ones come again, not it.
	evs, _ := byHeader.snapshot()
	resumed := followSession(t, base+a.ID+"/events", a.ViewerToken, evs[0].ID)
	f.Eventually(10*time.Second, "the resumed stream replays what followed", func() bool {
		got, _ := resumed.snapshot()
		return len(got) == len(evs)-1
	})
	got, _ := resumed.snapshot()
	for i := range got {
		if got[i].ID != evs[i+1].ID {
			t.Fatalf("resumed event %d has id %s, want %s", i, got[i].ID, evs[i+1].ID)
		}
	}
}

func hasTypes(evs []whepviewer.Event, types ...string) bool {
	seen := map[string]bool{}
	for _, e := range evs {
		seen[e.Type] = true
	}
	for _, t := range types {
		if !seen[t] {
			return false
		}
	}
	return true
}
