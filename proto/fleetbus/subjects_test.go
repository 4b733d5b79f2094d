package fleetbus_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// A worker's wildcard grant never matches another worker's subjects, even
// when ids hold dots.
func TestWorkerSubjectsDoNotOverlap(t *testing.T) {
	for _, tc := range []struct{ worker, other string }{
		{"a", "a.sessions.x"},
		{"a", "a.b"},
		{"gpu.node", "gpu"},
	} {
		for _, subject := range []string{
			fleetbus.WorkerSubject(tc.other),
			fleetbus.WorkerSessionSubject(tc.other, "s1"),
			fleetbus.WorkerSessionSubject(tc.other, "x.y"),
		} {
			for _, grant := range []string{fleetbus.WorkerSubject(tc.worker), fleetbus.WorkerSessionsAll(tc.worker), fleetbus.WorkerInboxPrefix(tc.worker) + ".>"} {
				if server.SubjectsCollide(grant, subject) {
					t.Errorf("worker %q's grant %s matches %s of worker %q", tc.worker, grant, subject, tc.other)
				}
			}
		}
	}
}

func TestCheckEventRoundTripsDottedIDs(t *testing.T) {
	sess := &fleetv1.Session{Id: "s.1", WorkerId: "gpu.node-1", Owner: "o"}
	e := fleetbus.SpeakingEvent(false, sess, 0)
	origin, err := fleetbus.CheckEvent(fleetbus.WorkerSessionSubject("gpu.node-1", "s.1"), e)
	if err != nil || !origin.FromWorker || origin.Worker != "gpu.node-1" {
		t.Fatalf("CheckEvent = %+v, %v", origin, err)
	}
	if _, err := fleetbus.CheckEvent(fleetbus.WorkerSessionSubject("gpu", "s.1"), e); !errors.Is(err, fleetbus.ErrMismatch) {
		t.Fatalf("event of gpu.node-1 on gpu's subject: %v", err)
	}
}
