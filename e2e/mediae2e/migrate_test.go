//go:build linux

package mediae2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
)

// TestDrainMigrateRealMedia: on the built binaries with the real media
// pipeline and SFU, drain --migrate moves a watched session to the other
// worker, and its viewer (a Follower) decodes pictures from the new worker.
// The gap between the last packet from the old worker and the first from
// the new one, and the time to the first decoded picture after it, are
// logged.
func TestDrainMigrateRealMedia(t *testing.T) {
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{SlotsPerGPU: 1}, {SlotsPerGPU: 1}}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	sess := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	src := sess.WorkerID
	fl, err := whepviewer.Follow(ctx, f.WHEPURL(sess), sess.ViewerToken, whepviewer.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = fl.Close(cctx)
	})
	firstFrame(ctx, t, fl.Viewer())

	body, _ := json.Marshal(apiv1.DrainRequest{Migrate: true})
	if err := binfleet.Call(ctx, http.MethodPost, f.URL+"/v1/workers/"+src+"/drain", f.APIKey, "application/json", body, http.StatusAccepted, nil); err != nil {
		t.Fatal(err)
	}
	f.WaitUntil(t, "the session runs on the other worker and its viewer followed", 90*time.Second, func() error {
		got, err := f.GetSession(ctx, sess.ID)
		if err != nil {
			return err
		}
		if got.State != apiv1.StateReady || got.WorkerID == src {
			return fmt.Errorf("session %s on %s", got.State, got.WorkerID)
		}
		var w apiv1.Worker
		if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/workers/"+src, &w); err != nil {
			return err
		}
		if w.Sessions != 0 {
			return fmt.Errorf("%s still holds %d sessions", src, w.Sessions)
		}
		if len(fl.Switches()) == 0 {
			return fmt.Errorf("the viewer has not switched yet (%v)", fl.Err())
		}
		return nil
	})
	sw := fl.Switches()[0]
	fr := firstFrame(ctx, t, fl.Viewer())
	t.Logf("viewer switched on %s after %d offer(s): packet gap %s, first picture %s after the last packet from %s",
		sw.Reason, sw.Attempts, sw.Gap, fr.Decoded.Sub(sw.LastBefore), src)
	if fps, _ := rates(fl.Viewer(), 2*time.Second); fps < minFPS {
		t.Errorf("%.1f fps from the new worker, want at least %d", fps, minFPS)
	}
}
