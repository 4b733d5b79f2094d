//go:build linux

package mediae2e

import (
	"context"
	"fmt"
	"image"
	"math"
	"path"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

const (
	// side is the default avatar's frame size.
	side = 512
	// minFPS..maxFPS is accepted for 25 fps video measured over a few
	// seconds on a loaded 2-core machine.
	minFPS, maxFPS = 18, 30
	// minAudioPPS is the least Opus packets per second accepted (20 ms
	// frames: 50 a second).
	minAudioPPS = 35
	// idleTimeout is the shortest idle_timeout_seconds the API takes.
	idleTimeout = 5
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m),
		// http.DefaultClient's kept-alive connections to the control plane.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// TestMediaDelivery watches one session with Pion viewers through the
// control plane's WHEP endpoint and checks what arrives and what the API
// reports, then checks how sessions end without viewers.
func TestMediaDelivery(t *testing.T) {
	// Three slots: the watched session and the two that time out.
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{SlotsPerGPU: 3}}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	sess := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	first := dial(ctx, t, f, sess)

	t.Run("VP8 at 25 fps and Opus", func(t *testing.T) {
		fr := firstFrame(ctx, t, first)
		b := fr.Image.Bounds()
		if b.Dx() != side || b.Dy() != side {
			t.Errorf("first frame is %dx%d, want %dx%d", b.Dx(), b.Dy(), side, side)
		}
		if !fr.Keyframe {
			t.Errorf("first decoded frame %d is not a key frame", fr.Index)
		}
		if sd := lumaStdDev(fr.Image); sd < 10 {
			t.Errorf("first picture is nearly flat (luma std dev %.1f): not the avatar", sd)
		}
		tm := first.Timings()
		t.Logf("WHEP answered in %v, connected %v later, first frame %v after that (%d PLIs)",
			tm.Answered.Sub(tm.Start), tm.Connected.Sub(tm.Answered), tm.FirstFrame.Sub(tm.Connected), first.PLIs())

		fps, pps := rates(first, 3*time.Second)
		t.Logf("%.1f fps, %.1f Opus packets/s", fps, pps)
		if fps < minFPS || fps > maxFPS {
			t.Errorf("received %.1f video frames/s, want %d..%d (25 fps)", fps, minFPS, maxFPS)
		}
		if pps < minAudioPPS {
			t.Errorf("received %.1f Opus packets/s, want at least %d (50 a second)", pps, minAudioPPS)
		}
		if err := first.Err(); err != nil {
			t.Errorf("viewer: %v", err)
		}
	})

	t.Run("session stats show the viewer", func(t *testing.T) {
		id := path.Base(first.Location())
		v0 := viewerStats(ctx, t, f, sess.ID, id)
		time.Sleep(1500 * time.Millisecond)
		v1 := viewerStats(ctx, t, f, sess.ID, id)
		t.Logf("viewer %s: %+v", id, v1)
		if v1.State != "connected" {
			t.Errorf("viewer state %q, want connected", v1.State)
		}
		if v1.PacketsSent <= v0.PacketsSent || v1.BytesSent <= v0.BytesSent {
			t.Errorf("packets sent did not grow in 1.5 s: %d → %d (bytes %d → %d)", v0.PacketsSent, v1.PacketsSent, v0.BytesSent, v1.BytesSent)
		}
		if v1.ConnectedAt == nil {
			t.Error("connected_at is missing")
		}
	})

	t.Run("a second viewer gets the frames too", func(t *testing.T) {
		second := dial(ctx, t, f, sess)
		firstFrame(ctx, t, second)
		a0, b0 := first.VideoFrames(), second.VideoFrames()
		fps2, pps2 := rates(second, 2*time.Second)
		a1 := first.VideoFrames()
		fps1 := float64(a1-a0) / 2
		t.Logf("first viewer %.1f fps, second %.1f fps (%d frames before), %.1f Opus packets/s", fps1, fps2, b0, pps2)
		for name, fps := range map[string]float64{"first": fps1, "second": fps2} {
			if fps < minFPS {
				t.Errorf("%s viewer received %.1f fps with two viewers, want at least %d", name, fps, minFPS)
			}
		}
		if pps2 < minAudioPPS {
			t.Errorf("second viewer received %.1f Opus packets/s", pps2)
		}
		s, err := f.GetSession(ctx, sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		if s.Stats == nil || len(s.Stats.Viewers) != 2 {
			t.Errorf("stats with two viewers: %+v", s.Stats)
		}
		if err := second.HangUp(ctx); err != nil {
			t.Error(err)
		}
	})

	t.Run("speech is reported as speaking events", func(t *testing.T) {
		speakingEvents(ctx, t, f, sess.ID)
	})

	if err := first.HangUp(ctx); err != nil {
		t.Error(err)
	}
	if err := f.DeleteSession(ctx, sess.ID); err != nil {
		t.Error(err)
	}

	t.Run("sessions end without viewers", func(t *testing.T) {
		short := idleTimeout
		gone := createReady(ctx, t, f, apiv1.CreateSessionRequest{IdleTimeoutSeconds: &short})
		never := createReady(ctx, t, f, apiv1.CreateSessionRequest{IdleTimeoutSeconds: &short})
		v := dial(ctx, t, f, gone)
		firstFrame(ctx, t, v)
		// Watch past the idle timeout: a watched session does not idle out.
		time.Sleep((idleTimeout + 1) * time.Second)
		if s, err := f.GetSession(ctx, gone.ID); err != nil || s.State != apiv1.StateReady {
			t.Fatalf("a watched session after %d s: %+v, %v", idleTimeout+1, s, err)
		}
		hungUp := time.Now()
		if err := v.HangUp(ctx); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, c := range []struct {
			s    apiv1.Session
			want string
		}{{gone, apiv1.ReasonViewerGone}, {never, apiv1.ReasonIdleTimeout}} {
			wg.Go(func() {
				s := waitEnded(ctx, t, f, c.s.ID, 30*time.Second)
				t.Logf("session %s: %s (%s) %v after the hang-up: %s", s.ID, s.State, s.EndReason, time.Since(hungUp).Round(100*time.Millisecond), s.EndMessage)
				if s.EndReason != c.want {
					t.Errorf("session %s ended with %q, want %q", s.ID, s.EndReason, c.want)
				}
			})
		}
		wg.Wait()
	})
}

// firstFrame waits up to 30 s for a viewer's first decoded picture.
func firstFrame(ctx context.Context, t *testing.T, v *whepviewer.Viewer) whepviewer.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fr, err := v.WaitFirstFrame(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return fr
}

// createReady creates a session and waits until it is ready.
func createReady(ctx context.Context, t *testing.T, f *binfleet.Fleet, req apiv1.CreateSessionRequest) apiv1.Session {
	t.Helper()
	s, err := f.CreateSession(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	f.WaitUntil(t, "session "+s.ID+" ready", 60*time.Second, func() error {
		got, err := f.GetSession(ctx, s.ID)
		if err != nil {
			return err
		}
		if got.State != apiv1.StateReady {
			return fmt.Errorf("state %s (%s %s)", got.State, got.EndReason, got.EndMessage)
		}
		return nil
	})
	return s
}

// dial connects a viewer to the session; t.Cleanup closes it.
func dial(ctx context.Context, t *testing.T, f *binfleet.Fleet, s apiv1.Session) *whepviewer.Viewer {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := whepviewer.Dial(ctx, f.WHEPURL(s), s.ViewerToken, whepviewer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// rates are the video frames and audio packets a viewer receives per
// second over d.
func rates(v *whepviewer.Viewer, d time.Duration) (fps, pps float64) {
	f0, a0, t0 := v.VideoFrames(), v.AudioPackets(), time.Now()
	time.Sleep(d)
	f1, a1, dt := v.VideoFrames(), v.AudioPackets(), time.Since(t0).Seconds()
	return float64(f1-f0) / dt, float64(a1-a0) / dt
}

// viewerStats is one viewer's entry in GET /v1/sessions/{id}'s stats.
func viewerStats(ctx context.Context, t *testing.T, f *binfleet.Fleet, sessionID, viewerID string) apiv1.ViewerStats {
	t.Helper()
	s, err := f.GetSession(ctx, sessionID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Stats == nil {
		t.Fatalf("session %s has no stats: %+v", sessionID, s)
	}
	for _, v := range s.Stats.Viewers {
		if v.ID == viewerID {
			return v
		}
	}
	t.Fatalf("viewer %s is not in the session's stats: %+v", viewerID, s.Stats.Viewers)
	return apiv1.ViewerStats{}
}

// waitEnded polls GET until the session has ended.
func waitEnded(ctx context.Context, t *testing.T, f *binfleet.Fleet, id string, timeout time.Duration) apiv1.Session {
	deadline := time.Now().Add(timeout)
	for {
		s, err := f.GetSession(ctx, id)
		if err == nil && (s.State == apiv1.StateEnded || s.State == apiv1.StateFailed) {
			return s
		}
		if time.Now().After(deadline) {
			t.Errorf("session %s has not ended %v later: %+v %v", id, timeout, s, err)
			return s
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lumaStdDev is the standard deviation of a picture's luma.
func lumaStdDev(img *image.YCbCr) float64 {
	b := img.Bounds()
	var sum, sq float64
	n := float64(b.Dx() * b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			v := float64(img.Y[img.YOffset(x, y)])
			sum += v
			sq += v * v
		}
	}
	m := sum / n
	return math.Sqrt(math.Max(0, sq/n-m*m))
}
