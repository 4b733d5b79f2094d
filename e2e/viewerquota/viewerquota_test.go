package viewerquota

import (
	"net/http"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/viewertoken"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/sfu"
	"github.com/avatarfleet/avatarfleet/worker/pkg/rooms"
)

func intp(v int) *int { return &v }

// 60 WHEP offers with one viewer token that never connect take only the
// session owner's per-token cap of places (the rest get 429 quota_exceeded
// without taking one); a viewer with another token still joins and
// connects; the ones that never complete ICE are gone after the SFU's
// connect timeout.
func TestPendingViewersThroughControlPlane(t *testing.T) {
	const perToken = 4 // the key's limit, below the SFU's default of 5
	media, err := sfu.New(sfu.Config{ListenIP: "127.0.0.1", MaxViewersPerRoom: 50, ConnectTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = media.Close() }) // after the fleet has stopped
	f := testfleet.Start(t, testfleet.Options{
		Workers: []testfleet.WorkerSpec{{ID: "w1", Signaling: rooms.New(media)}},
		KeyLimits: map[string]auth.LimitOverrides{
			testfleet.SessionsKey: {MaxPendingViewers: intp(10), MaxPendingViewersPerToken: intp(perToken)},
		},
	})
	r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var sess apiv1.Session
	r.JSON(t, &sess)
	// The test worker runs no media pipeline: open the session's room as
	// the worker's runtime would.
	room, err := media.OpenRoom(sess.ID, sfu.RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}

	_, offer := testfleet.NewPeer(t, testfleet.Viewer) // its answers are never applied
	admitted, refused := 0, 0
	for i := range 60 {
		r := f.MustDo(0, "POST", "/v1/sessions/"+sess.ID+"/whep", sess.ViewerToken, offer, "Content-Type", "application/sdp")
		switch r.Status {
		case http.StatusCreated:
			admitted++
		case http.StatusTooManyRequests:
			var e apiv1.ErrorBody
			r.JSON(t, &e)
			if e.Error.Code != apiv1.CodeQuotaExceeded || r.Header.Get("Retry-After") == "" {
				t.Fatalf("offer %d: 429 %s with Retry-After %q, want quota_exceeded with Retry-After", i, r.Body, r.Header.Get("Retry-After"))
			}
			refused++
		default:
			t.Fatalf("offer %d: %d %s", i, r.Status, r.Body)
		}
	}
	if admitted != perToken || room.Viewers() != perToken {
		t.Fatalf("60 offers of one token: %d admitted (%d refused), room holds %d; want %d", admitted, refused, room.Viewers(), perToken)
	}

	// Another token of the same session still gets in and connects.
	signer, err := viewertoken.NewSigner(f.TokenKeys, time.Hour, viewertoken.WithClock(func() time.Time { return time.Now().Add(-time.Minute) }))
	if err != nil {
		t.Fatal(err)
	}
	other, err := signer.Issue(sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if other == sess.ViewerToken {
		t.Fatal("the second token is the first")
	}
	peer, offer2 := testfleet.NewPeer(t, testfleet.Viewer)
	r = f.MustDo(0, "POST", "/v1/sessions/"+sess.ID+"/whep", other, offer2, "Content-Type", "application/sdp")
	if r.Status != http.StatusCreated {
		t.Fatalf("viewer with another token: %d %s", r.Status, r.Body)
	}
	peer.Accept(t, string(r.Body))

	// The viewers that never completed ICE are dropped; the connected stays.
	f.Eventually(30*time.Second, "the never-connected viewers are dropped", func() bool { return room.Viewers() == 1 })
	r = f.MustDo(0, "POST", "/v1/sessions/"+sess.ID+"/whep", sess.ViewerToken, offer, "Content-Type", "application/sdp")
	if r.Status != http.StatusCreated {
		t.Fatalf("first token after the drop: %d %s", r.Status, r.Body)
	}
}
