package httpapi

import (
	"context"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func TestCheckEventOriginDropsWorkerEventsItsSubjectDoesNotVouchFor(t *testing.T) {
	records := map[string]*fleetv1.Session{
		"s-a": {Id: "s-a", WorkerId: "w-a", Owner: "alice"},
		"s-b": {Id: "s-b", WorkerId: "w-b", Owner: "bob"},
	}
	lookup := func(_ context.Context, id string) (*fleetv1.Session, error) {
		if s, ok := records[id]; ok {
			return s, nil
		}
		return nil, fleetstore.ErrNotFound
	}
	speaking := func(worker, session, owner string) *fleetv1.Event {
		return fleetbus.SpeakingEvent(true, &fleetv1.Session{Id: session, WorkerId: worker, Owner: owner}, time.Second)
	}
	ended := fleetbus.SessionEvent(fleetbus.SessionEnded, records["s-b"])
	for _, tc := range []struct {
		name    string
		subject string
		event   *fleetv1.Event
		ok      bool
	}{
		{"worker speaks for its own session", fleetbus.WorkerSessionSubject("w-a", "s-a"), speaking("w-a", "s-a", "alice"), true},
		{"control plane event", fleetbus.SessionSubject("s-b"), ended, true},
		{"worker event", fleetbus.WorkerSubject("w-a"), fleetbus.WorkerEvent(fleetbus.WorkerDraining, "w-a", nil), true},
		// Worker A on its own subject, claiming worker B's session.
		{"session hosted on another worker", fleetbus.WorkerSessionSubject("w-a", "s-b"), speaking("w-a", "s-b", "bob"), false},
		// Worker A's subject carrying an event that names worker B.
		{"event names another worker", fleetbus.WorkerSessionSubject("w-a", "s-b"), speaking("w-b", "s-b", "bob"), false},
		{"record names another worker", fleetbus.WorkerSessionSubject("w-a", "s-a"), func() *fleetv1.Event {
			e := speaking("w-a", "s-a", "alice")
			e.Session.WorkerId = "w-b"
			return e
		}(), false},
		{"own session, another owner's stream", fleetbus.WorkerSessionSubject("w-a", "s-a"), speaking("w-a", "s-a", "bob"), false},
		{"session without a record", fleetbus.WorkerSessionSubject("w-a", "s-gone"), speaking("w-a", "s-gone", "alice"), false},
		{"session id differs from subject", fleetbus.WorkerSessionSubject("w-a", "s-a"), speaking("w-a", "s-x", "alice"), false},
		{"lifecycle type a worker may not publish", fleetbus.WorkerSessionSubject("w-a", "s-a"), func() *fleetv1.Event {
			e := speaking("w-a", "s-a", "alice")
			e.Type = fleetbus.SessionReady
			return e
		}(), false},
		{"session event on a worker subject", fleetbus.WorkerSubject("w-a"), speaking("w-a", "s-a", "alice"), false},
		{"control-plane subject of another session", fleetbus.SessionSubject("s-a"), ended, false},
		{"unknown subject", "avatarfleet.events.other", ended, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkEventOrigin(t.Context(), lookup, tc.subject, tc.event)
			if (err == nil) != tc.ok {
				t.Fatalf("checkEventOrigin(%s, %s) = %v, want ok=%v", tc.subject, tc.event.GetType(), err, tc.ok)
			}
		})
	}
	if err := checkEventOrigin(t.Context(), nil, fleetbus.WorkerSessionSubject("w-a", "s-a"), speaking("w-a", "s-a", "alice")); err == nil {
		t.Fatal("a worker's session event passed with no records to check it against")
	}
}
