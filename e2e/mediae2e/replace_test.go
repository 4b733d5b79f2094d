//go:build linux

package mediae2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
)

// TestKilledWorkerViewerFollows: a session watched by a Pion WHEP viewer
// that follows its session (whepviewer.Follower: it reconnects on
// session.moved from GET /v1/sessions/{id}/events, on a failed connection
// or on stalled media, with the same WHEP URL and viewer token) loses its
// worker to kill -9. The session keeps its id, avatar and voice (and the
// follower's viewer token, read before the kill, still works), is ready on
// the other worker with moves 1, moved_from and move_reason worker_lost,
// and the same follower decodes pictures from the new worker at the full
// frame rate. Kill → session ready elsewhere and
// kill → first new picture decoded are logged.
func TestKilledWorkerViewerFollows(t *testing.T) {
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{ID: "e2e-a"}, {ID: "e2e-b"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	sess := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	before, err := f.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := whepviewer.Follow(ctx, f.WHEPURL(before), before.ViewerToken, whepviewer.FollowOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := fl.Close(cctx); err != nil {
			t.Error(err)
		}
	}()
	firstFrame(ctx, t, fl.Viewer())

	lost := before.WorkerID
	other := map[string]string{"e2e-a": "e2e-b", "e2e-b": "e2e-a"}[lost]
	killed := f.KillWorker(t, lost)

	var after apiv1.Session
	f.WaitUntil(t, "session "+sess.ID+" ready on "+other, 90*time.Second, func() error {
		s, err := f.GetSession(ctx, sess.ID)
		if err != nil {
			return err
		}
		after = s
		if s.State != apiv1.StateReady || s.WorkerID != other {
			return fmt.Errorf("session is %s on %q (%s %s)", s.State, s.WorkerID, s.EndReason, s.EndMessage)
		}
		return nil
	})
	ready := time.Since(killed)
	f.WaitUntil(t, "the viewer switched to a connection made after the kill", 60*time.Second, func() error {
		for _, sw := range fl.Switches() {
			if sw.FirstAfter.After(killed) {
				return nil
			}
		}
		return fmt.Errorf("%d switches (%v)", len(fl.Switches()), fl.Err())
	})
	fr := firstFrame(ctx, t, fl.Viewer())
	sws := fl.Switches()
	sw := sws[len(sws)-1]
	t.Logf("kill -9 of %s → session ready on %s: %v (polled every 200 ms); → first new picture decoded by the same follower: %v "+
		"(switch on %s after %d offer(s), packet gap %v; %d switches)",
		lost, after.WorkerID, ready.Round(time.Millisecond), fr.Decoded.Sub(killed).Round(time.Millisecond),
		sw.Reason, sw.Attempts, sw.Gap.Round(time.Millisecond), len(sws))
	if after.ID != before.ID || after.Avatar != before.Avatar || after.Voice != before.Voice {
		t.Errorf("the session changed: %+v → %+v", before, after)
	}
	if after.Moves != 1 || after.MovedFrom != lost || after.MoveReason != apiv1.ReasonWorkerLost {
		t.Errorf("after the move: moves %d, moved_from %q, move_reason %q; want 1, %s, %s",
			after.Moves, after.MovedFrom, after.MoveReason, lost, apiv1.ReasonWorkerLost)
	}
	if fps, _ := rates(fl.Viewer(), 3*time.Second); fps < minFPS {
		t.Errorf("after the move the viewer receives %.1f fps, want at least %d", fps, minFPS)
	}
	if err := f.DeleteSession(ctx, sess.ID); err != nil {
		t.Error(err)
	}
}
