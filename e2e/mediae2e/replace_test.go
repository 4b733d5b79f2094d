//go:build linux

package mediae2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// TestKilledWorkerViewerFollows: a session watched by a Pion WHEP viewer
// loses its worker to kill -9. The session keeps its id and viewer token,
// is ready on the other worker, and the same viewer (a binfleet.Watcher,
// which dials the same WHEP URL with the same token again) decodes
// pictures again at the full frame rate. Kill → session ready elsewhere
// and kill → first new picture decoded are logged.
func TestKilledWorkerViewerFollows(t *testing.T) {
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{ID: "e2e-a"}, {ID: "e2e-b"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	sess := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	before, err := f.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	w, err := f.Watch(ctx, before)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := w.FirstFrameAfter(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}

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
	fctx, fcancel := context.WithTimeout(ctx, 60*time.Second)
	defer fcancel()
	c, err := w.FirstFrameAfter(fctx, killed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 of %s → session ready on %s: %v (or less: polled); → first new picture decoded by the same viewer: %v (%d connections)",
		lost, after.WorkerID, ready.Round(time.Millisecond), c.FirstFrame.Sub(killed).Round(time.Millisecond), len(w.Conns()))
	if c.Worker != other {
		t.Errorf("the picture came over a connection to %q, want %s", c.Worker, other)
	}
	if after.ID != before.ID || after.Avatar != before.Avatar || after.Voice != before.Voice {
		t.Errorf("the session changed: %+v → %+v", before, after)
	}
	if after.ViewerToken != "" && after.ViewerToken != before.ViewerToken {
		t.Error("the session's viewer token changed with the move")
	}

	f0, t0 := w.Frames(), time.Now()
	time.Sleep(3 * time.Second)
	fps := float64(w.Frames()-f0) / time.Since(t0).Seconds()
	t.Logf("after the move: %.1f fps", fps)
	if fps < minFPS {
		t.Errorf("after the move the viewer receives %.1f fps, want at least %d", fps, minFPS)
	}
	if err := f.DeleteSession(ctx, sess.ID); err != nil {
		t.Error(err)
	}
}
