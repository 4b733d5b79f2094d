package replica_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
)

type sseLog struct {
	mu     sync.Mutex
	events []apiv1.Event
}

func (l *sseLog) types(sessionID string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if e.SessionID == sessionID {
			out = append(out, e.Type)
		}
	}
	return out
}

// event is the i-th event of a session.
func (l *sseLog) event(sessionID string, i int) apiv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.SessionID == sessionID {
			if i == 0 {
				return e
			}
			i--
		}
	}
	return apiv1.Event{}
}

func streamEvents(t *testing.T, f *testfleet.Fleet, key string) *sseLog {
	t.Helper()
	c, err := apiclient.New(apiclient.Options{BaseURL: f.URL(0), APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &sseLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := c.Events(ctx, func(e apiv1.Event) error {
			l.mu.Lock()
			l.events = append(l.events, e)
			l.mu.Unlock()
			return nil
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("events stream: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// TestEventsOverSSE: each lifecycle change of a session arrives as one JSON
// server-sent event, in order, speaking events from the worker included; a
// key sees only its own sessions' events.
func TestEventsOverSSE(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w"}}})
	mine := streamEvents(t, f, testfleet.SessionsKey)
	others := streamEvents(t, f, testfleet.OtherKey)
	admin := streamEvents(t, f, testfleet.AdminKey)
	time.Sleep(300 * time.Millisecond) // let the streams subscribe

	s := createSession(t, f, 0, testfleet.SessionsKey)
	// The worker's runtime reports speech playing out (the Holder stands in
	// for the media runtime here); the agent publishes it as events.
	holder, ok := f.Worker("w").Agent.Runtime().(*runtimetest.Holder)
	if !ok {
		t.Fatalf("worker runtime is %T, want the Holder", f.Worker("w").Agent.Runtime())
	}
	// The ready event comes from the control plane's async publisher and
	// the speaking events from the worker's: two publishers, so order them
	// as speech does (it only starts once the session is ready).
	f.Eventually(10*time.Second, "the owner sees the session ready", func() bool {
		return equal(mine.types(s.ID), []string{"session.starting", "session.ready"})
	})
	if err := holder.EmitSpeaking(s.ID, true, 80*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := holder.EmitSpeaking(s.ID, false, 1240*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	f.Eventually(10*time.Second, "the owner sees speaking started, ended", func() bool {
		return equal(mine.types(s.ID), []string{"session.starting", "session.ready", "session.speaking_started", "session.speaking_ended"})
	})
	for i, wantMS := range []int64{80, 1240} {
		e := mine.event(s.ID, 2+i)
		if e.MediaTimeMS == nil || *e.MediaTimeMS != wantMS || e.Session == nil || e.Session.State != apiv1.StateReady || e.WorkerID != "w" {
			t.Errorf("%s event: media time %v, session %+v, worker %q; want %d ms, the ready session on w", e.Type, e.MediaTimeMS, e.Session, e.WorkerID, wantMS)
		}
	}
	if r := f.MustDo(0, "DELETE", "/v1/sessions/"+s.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete: %d", r.Status)
	}
	want := []string{"session.starting", "session.ready", "session.speaking_started", "session.speaking_ended", "session.ended"}
	f.Eventually(10*time.Second, "the owner sees starting, ready, speaking, ended", func() bool {
		return equal(mine.types(s.ID), want)
	})
	f.Eventually(5*time.Second, "an admin sees them too", func() bool {
		return equal(admin.types(s.ID), want)
	})
	if r := f.MustDo(0, "POST", "/v1/workers/w/drain", testfleet.AdminKey, nil); r.Status != 202 {
		t.Fatalf("drain: %d", r.Status)
	}
	f.Eventually(5*time.Second, "an admin sees the drain", func() bool {
		admin.mu.Lock()
		defer admin.mu.Unlock()
		for _, e := range admin.events {
			if e.Type == "worker.draining" && e.WorkerID == "w" {
				return true
			}
		}
		return false
	})
	mine.mu.Lock()
	last := mine.events[len(mine.events)-1]
	mine.mu.Unlock()
	if last.Session == nil || last.Session.EndReason != apiv1.ReasonDeleted || last.Session.ViewerToken != "" {
		t.Errorf("ended event carries %+v", last.Session)
	}
	if got := others.types(s.ID); len(got) != 0 {
		t.Errorf("another key saw events %v of a session it does not own", got)
	}
	others.mu.Lock()
	defer others.mu.Unlock()
	for _, e := range others.events {
		if e.WorkerID != "" && e.SessionID == "" {
			t.Errorf("a sessions key saw worker event %s", e.Type)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestEventsOnAShortJetStreamStore: a NATS server whose JetStream store
// cannot hold the events stream's default 1 GiB (a machine short of disk)
// still gets a control plane: the stream is made as large as fits, and
// events reach it and the SSE stream.
func TestEventsOnAShortJetStreamStore(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w"}}, NATSMaxStore: 100 << 20})
	js := f.ControlPlaneJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, fleetbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if got := stream.CachedInfo().Config.MaxBytes; got != 64<<20 {
		t.Fatalf("stream MaxBytes = %d MiB, want 64 MiB (the largest halving of 1 GiB within 100 MiB)", got>>20)
	}
	mine := streamEvents(t, f, testfleet.SessionsKey)
	time.Sleep(300 * time.Millisecond) // let the stream subscribe
	s := createSession(t, f, 0, testfleet.SessionsKey)
	f.Eventually(10*time.Second, "the owner sees the session ready", func() bool {
		return equal(mine.types(s.ID), []string{"session.starting", "session.ready"})
	})
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Fatalf("the stream kept no events: %+v", info.State)
	}
}
