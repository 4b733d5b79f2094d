package replacement_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// whepOffer makes a real Pion viewer's offer (receive video and audio).
func whepOffer(t *testing.T) string {
	t.Helper()
	_, offer := testfleet.NewPeer(t, testfleet.Viewer)
	return offer
}

// TestMovedSessionKeepsItsViewerURLAndToken: the WHEP URL and viewer token
// handed out at creation reach the session on its new worker after a move.
func TestMovedSessionKeepsItsViewerURLAndToken(t *testing.T) {
	sfus := map[string]*testfleet.PionAnswerer{"w1": testfleet.NewPionAnswerer(t), "w2": testfleet.NewPionAnswerer(t)}
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{
		{ID: "w1", Signaling: sfus["w1"]}, {ID: "w2", Signaling: sfus["w2"]}}})
	s := create(t, f, apiv1.CreateSessionRequest{})
	path := "/v1/sessions/" + s.ID + "/whep"
	if r := f.MustDo(0, "POST", path, s.ViewerToken, whepOffer(t), "Content-Type", "application/sdp"); r.Status != http.StatusCreated {
		t.Fatalf("WHEP before the move: %d %s", r.Status, r.Body)
	}
	victim, target := s.WorkerID, other(s.WorkerID)
	if err := f.KillWorker(victim); err == nil {
		t.Log("aborted worker returned nil")
	}
	f.Eventually(30*time.Second, "the session is ready on "+target, func() bool {
		got := get(t, f, s.ID)
		return got.State == apiv1.StateReady && got.WorkerID == target
	})
	if r := f.MustDo(0, "POST", path, s.ViewerToken, whepOffer(t), "Content-Type", "application/sdp"); r.Status != http.StatusCreated {
		t.Fatalf("WHEP with the creation's token after the move: %d %s", r.Status, r.Body)
	}
	st, err := sfus[target].Stats(s.ID)
	if err != nil || len(st.GetViewers()) != 1 {
		t.Fatalf("viewers of the session on %s: %v, %v", target, st, err)
	}
}
