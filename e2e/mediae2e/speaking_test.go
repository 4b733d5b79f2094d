//go:build linux

package mediae2e

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/proto/wav"
)

// toneSeconds is how long the spoken tone lasts.
const toneSeconds = 0.8

// speakingEvents posts a tone to a watched session and reads GET
// /v1/events until the worker's session.speaking_started and
// session.speaking_ended of that session arrive, in that order, about the
// tone's length of media time apart.
func speakingEvents(ctx context.Context, t *testing.T, f *binfleet.Fleet, sessionID string) {
	t.Helper()
	c, err := apiclient.New(apiclient.Options{BaseURL: f.URL, APIKey: f.APIKey})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got := make(chan apiv1.Event, 16)
	streamErr := make(chan error, 1)
	go func() {
		streamErr <- c.Events(ctx, func(e apiv1.Event) error {
			if e.SessionID == sessionID && (e.Type == "session.speaking_started" || e.Type == "session.speaking_ended") {
				got <- e
			}
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-streamErr; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("events stream: %v", err)
		}
	}()
	time.Sleep(500 * time.Millisecond) // let the stream subscribe (it starts at new events)

	posted := time.Now()
	if err := f.PostAudio(ctx, sessionID, tone(toneSeconds)); err != nil {
		t.Fatal(err)
	}
	var events []apiv1.Event
	for len(events) < 2 {
		select {
		case e := <-got:
			events = append(events, e)
			t.Logf("%s %v after the POST, media time %v ms", e.Type, time.Since(posted).Round(time.Millisecond), deref(e.MediaTimeMS))
		case <-ctx.Done():
			t.Fatalf("speaking events of %s so far: %+v; want started and ended", sessionID, events)
		}
	}
	start, end := events[0], events[1]
	if start.Type != "session.speaking_started" || end.Type != "session.speaking_ended" {
		t.Fatalf("events %s, %s; want session.speaking_started then session.speaking_ended", start.Type, end.Type)
	}
	for _, e := range events {
		if e.MediaTimeMS == nil || e.Session == nil || e.Session.ID != sessionID || e.Session.State != apiv1.StateReady {
			t.Errorf("%s: media time %v, session %+v; want a media time and the ready session", e.Type, e.MediaTimeMS, e.Session)
		}
	}
	if start.MediaTimeMS != nil && end.MediaTimeMS != nil {
		spoke := time.Duration(*end.MediaTimeMS-*start.MediaTimeMS) * time.Millisecond
		want := time.Duration(toneSeconds * float64(time.Second))
		if spoke < want-200*time.Millisecond || spoke > want+300*time.Millisecond {
			t.Errorf("speech lasted %v of media time, want about %v", spoke, want)
		}
	}
}

// tone is a 16 kHz WAV of a 220 Hz tone lasting seconds.
func tone(seconds float64) []byte {
	s := make([]float32, int(seconds*16000))
	for i := range s {
		s[i] = float32(0.3 * math.Sin(2*math.Pi*220*float64(i)/16000))
	}
	return wav.Encode16(s, 16000)
}

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
