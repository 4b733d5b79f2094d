package replica_test

import (
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// TestRecordingRoutesOwnerOnly: the recording routes answer the key that
// created the session (and admin keys, as speak and interrupt do), through
// either replica; another key gets 404. This fleet's stand-in runtime does
// not record, so an allowed start is 409 session_not_ready (the recording
// itself is e2e/recording's, with the real binaries).
func TestRecordingRoutesOwnerOnly(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Replicas: 2, Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 2}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	recs := "/v1/sessions/" + s.ID + "/recordings"
	for _, tt := range []struct {
		name, method, key, path string
		status                  int
		code                    string
	}{
		{"another key starts", "POST", testfleet.OtherKey, recs, 404, apiv1.CodeNotFound},
		{"admin key starts", "POST", testfleet.AdminKey, recs, 409, apiv1.CodeSessionNotReady},
		{"no key", "POST", "", recs, 401, apiv1.CodeUnauthorized},
		{"viewer token", "POST", s.ViewerToken, recs, 401, apiv1.CodeUnauthorized},
		{"owner, worker does not record", "POST", testfleet.SessionsKey, recs, 409, apiv1.CodeSessionNotReady},
		{"unknown session", "POST", testfleet.SessionsKey, "/v1/sessions/sess_nope/recordings", 404, apiv1.CodeNotFound},
		{"another key stops", "DELETE", testfleet.OtherKey, recs + "/rec_1", 404, apiv1.CodeNotFound},
		{"another key downloads", "GET", testfleet.OtherKey, recs + "/rec_1", 404, apiv1.CodeNotFound},
		{"unknown recording stopped", "DELETE", testfleet.SessionsKey, recs + "/rec_1", 404, apiv1.CodeNotFound},
		{"unknown recording downloaded", "GET", testfleet.SessionsKey, recs + "/rec_1", 404, apiv1.CodeNotFound},
		{"bad recording id", "GET", testfleet.SessionsKey, recs + "/-x", 404, apiv1.CodeNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for replica := range 2 {
				r := f.MustDo(replica, tt.method, tt.path, tt.key, nil)
				if r.Status != tt.status || errorCode(t, r) != tt.code {
					t.Fatalf("replica %d: %d %s, want %d %s", replica, r.Status, r.Body, tt.status, tt.code)
				}
			}
		})
	}
}
