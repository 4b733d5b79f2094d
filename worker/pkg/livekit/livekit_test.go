package livekit_test

import (
	"context"
	"image"
	"log/slog"
	"math"
	"os"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference/inferencetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit/livekittest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	lkproto "github.com/livekit/protocol/livekit"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// mouthScore is how far a decoded frame's mouth and jaw (the lower half of
// the face box) are from the closest frame of the avatar's idle loop: the
// mean absolute Y difference. Idle frames score about the encoder's noise.
func mouthScore(img *image.YCbCr, pack *avatar.Pack) float64 {
	best := math.Inf(1)
	for j := range pack.Len() {
		ref, box := pack.Image(j), pack.Box(j)
		var sum float64
		n := 0
		for y := box.Min.Y + box.Dy()/2; y < box.Max.Y; y++ {
			for x := box.Min.X; x < box.Max.X; x++ {
				sum += math.Abs(float64(img.Y[y*img.YStride+x]) - float64(ref.Y[y*ref.YStride+x]))
				n++
			}
		}
		best = min(best, sum/float64(n))
	}
	return best
}

// window is what the subscriber saw over a span of frames.
type window struct {
	frames    int
	fps       float64
	max, mean float64
}

func measure(fs []frame, pack *avatar.Pack) window {
	var w window
	if len(fs) < 2 {
		return w
	}
	w.frames = len(fs)
	w.fps = float64(len(fs)-1) / fs[len(fs)-1].at.Sub(fs[0].at).Seconds()
	for _, f := range fs {
		s := mouthScore(f.img, pack)
		w.max = max(w.max, s)
		w.mean += s / float64(len(fs))
	}
	return w
}

func between(fs []frame, from, to time.Time) []frame {
	var out []frame
	for _, f := range fs {
		if f.at.After(from) && f.at.Before(to) {
			out = append(out, f)
		}
	}
	return out
}

// TestAgentAvatarThroughRuntime runs a session of the real media runtime
// (the default model on ONNX Runtime, libvpx, libopus, the real clock)
// whose record names a LiveKit room of a real livekit-server: a Go agent
// speaks through lk.audio_stream, gets lk.playback_started and
// lk.playback_finished, interrupts with lk.clear_buffer; a Go subscriber
// decodes the avatar's video. The agent leaving ends the session with
// viewer_gone.
func TestAgentAvatarThroughRuntime(t *testing.T) {
	srv := livekittest.Start(t)
	const room, agentID, avatarID = "agent-room", "agent-1", "avatar-1"
	ag := joinAgent(t, srv, room, agentID)
	sub := joinSubscriber(t, srv, room, avatarID)

	pack, err := avatar.Default()
	if err != nil {
		t.Fatal(err)
	}
	rt, err := mediaruntime.New(mediaruntime.Config{
		Devices: []*fleetv1.GPU{{Index: 0, Slots: 1, Cpu: true}},
		Model:   inferencetest.Default(t),
		Prewarm: 1,
		Avatar:  func(string) (*avatar.Pack, error) { return pack, nil },
		Media:   livekit.NewMedia(mediaruntime.NewDiscardMedia, livekit.MediaOptions{Logger: testLogger(t)}),
		Logger:  testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rt.Close(context.Background()); err != nil {
			t.Errorf("close runtime: %v", err)
		}
	}()
	tok := livekittest.Token(t, room, avatarID, lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: agentID})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := rt.Start(ctx, &fleetv1.Session{Id: "s1", Avatar: "default", Livekit: &fleetv1.LiveKitRoom{Url: srv.URL, Token: tok}}); err != nil {
		t.Fatalf("start: %v", err)
	}

	// Idle: the avatar's frames arrive before any speech.
	deadline := time.Now().Add(15 * time.Second)
	for v, _ := sub.count(); v < 40; v, _ = sub.count() {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber decoded %d frames of the avatar in 15 s", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	idleFrom := time.Now()
	time.Sleep(2 * time.Second)
	idle := measure(sub.since(idleFrom), pack)
	t.Logf("idle: %d frames, %.1f fps, mouth score max %.2f mean %.2f", idle.frames, idle.fps, idle.max, idle.mean)

	// Segment 1, played to its end.
	pcm, rate, dur := speech(t, "Hello, I am the avatar of a voice agent. My lips follow what the agent says.")
	sent := time.Now()
	ag.send(t, avatarID, pcm, rate, 2, true)
	started := ag.next(t, 10*time.Second)
	if started.method != livekit.RPCPlaybackStarted || started.from != avatarID {
		t.Fatalf("first RPC %+v, want %s from %s", started, livekit.RPCPlaybackStarted, avatarID)
	}
	finished := ag.next(t, dur+10*time.Second)
	if finished.method != livekit.RPCPlaybackFinished || finished.interrupted {
		t.Fatalf("second RPC %+v, want %s not interrupted", finished, livekit.RPCPlaybackFinished)
	}
	if d := math.Abs(finished.position - dur.Seconds()); d > 0.05 {
		t.Errorf("playback_position %.3f s, want the segment's %.3f s", finished.position, dur.Seconds())
	}
	// Longer than the audio only where the data channel brought it slower
	// than real time (the queue ran dry for a moment).
	if took := finished.at.Sub(started.at); took < dur-100*time.Millisecond || took > dur+time.Second {
		t.Errorf("started→finished took %s, want about the segment's %s", took, dur)
	}
	t.Logf("segment 1: %s of speech, started %s after sending, finished after %s, position %.3f s",
		dur, started.at.Sub(sent), finished.at.Sub(started.at), finished.position)
	speaking := measure(between(sub.since(started.at), started.at, finished.at), pack)
	t.Logf("speaking: %d frames, %.1f fps, mouth score max %.2f mean %.2f", speaking.frames, speaking.fps, speaking.max, speaking.mean)
	if speaking.fps < 22 || speaking.fps > 28 {
		t.Errorf("%.1f fps while speaking, want 25", speaking.fps)
	}
	if speaking.mean < 2*idle.mean+1 || speaking.max < 2*idle.max+2 {
		t.Errorf("the mouth barely moves: speaking mean %.2f max %.2f, idle mean %.2f max %.2f", speaking.mean, speaking.max, idle.mean, idle.max)
	}

	// Segment 2, cleared a second into its playback.
	pcm2, rate2, dur2 := speech(t, "This second sentence is long, and the agent interrupts it before the avatar has finished speaking it.")
	ag.send(t, avatarID, pcm2, rate2, 2, true)
	started2 := ag.next(t, 10*time.Second)
	if started2.method != livekit.RPCPlaybackStarted {
		t.Fatalf("RPC %+v, want %s", started2, livekit.RPCPlaybackStarted)
	}
	time.Sleep(time.Until(started2.at.Add(time.Second)))
	cleared := time.Now()
	ag.clear(t, avatarID)
	fin := ag.next(t, 5*time.Second)
	if fin.method != livekit.RPCPlaybackFinished || !fin.interrupted {
		t.Fatalf("RPC after clear %+v, want %s interrupted", fin, livekit.RPCPlaybackFinished)
	}
	// The position is what went out before the clear: about the time
	// since playback_started (less any moment the queue ran dry).
	played := cleared.Sub(started2.at).Seconds()
	t.Logf("segment 2 cleared %.3f s after playback_started: playback_position %.3f s of %s", played, fin.position, dur2)
	if fin.position < played-0.5 || fin.position > played+0.2 || fin.position >= dur2.Seconds() {
		t.Errorf("interrupted at %.3f s of %s, want about %.3f s", fin.position, dur2, played)
	}
	time.Sleep(1500 * time.Millisecond)
	after := measure(between(sub.since(cleared), cleared.Add(500*time.Millisecond), time.Now()), pack)
	t.Logf("after clear: %d frames, mouth score max %.2f mean %.2f", after.frames, after.max, after.mean)
	if after.mean > idle.mean+1 {
		t.Errorf("the mouth still moves after the clear: mean %.2f, idle %.2f", after.mean, idle.mean)
	}

	// The agent leaves: the session ends, viewer gone.
	left := time.Now()
	ag.leave()
	select {
	case e := <-rt.Ended():
		if e.SessionID != "s1" || e.Reason != fleetv1.EndReason_END_REASON_VIEWER_GONE {
			t.Errorf("ended %+v, want s1 with viewer_gone", e)
		}
		t.Logf("session ended %s after the agent left: %s", time.Since(left), e.Message)
	case <-time.After(15 * time.Second):
		t.Fatal("the session did not end within 15 s of the agent leaving")
	}
}
