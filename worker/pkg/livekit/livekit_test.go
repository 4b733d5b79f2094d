package livekit_test

import (
	"context"
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

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
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
	ag := livekittest.JoinAgent(t, srv, room, agentID)
	sub := livekittest.JoinSubscriber(t, srv, room, avatarID)

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
	for v, _ := sub.Count(); v < 40; v, _ = sub.Count() {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber decoded %d frames of the avatar in 15 s", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The session's status carries the room connection's live state.
	if st, err := rt.Status("s1"); err != nil || st.LiveKit.GetState() != livekit.StateJoined || st.LiveKit.GetReconnects() != 0 {
		t.Errorf("status %+v, %v: want livekit joined", st, err)
	}
	idleFrom := time.Now()
	time.Sleep(2 * time.Second)
	idle := livekittest.Measure(sub.Since(idleFrom), pack)
	t.Logf("idle: %d frames, %.1f fps, mouth score max %.2f mean %.2f", idle.Frames, idle.FPS, idle.Max, idle.Mean)

	// Segment 1, played to its end.
	pcm, rate, dur := livekittest.Speech(t, "Hello, I am the avatar of a voice agent. My lips follow what the agent says.")
	sent := time.Now()
	ag.Send(t, avatarID, pcm, rate, 2, true)
	started := ag.Next(t, 10*time.Second)
	if started.Method != livekit.RPCPlaybackStarted || started.From != avatarID {
		t.Fatalf("first RPC %+v, want %s from %s", started, livekit.RPCPlaybackStarted, avatarID)
	}
	finished := ag.Next(t, dur+10*time.Second)
	if finished.Method != livekit.RPCPlaybackFinished || finished.Interrupted {
		t.Fatalf("second RPC %+v, want %s not interrupted", finished, livekit.RPCPlaybackFinished)
	}
	if d := math.Abs(finished.Position - dur.Seconds()); d > 0.05 {
		t.Errorf("playback_position %.3f s, want the segment's %.3f s", finished.Position, dur.Seconds())
	}
	// Longer than the audio only where the data channel brought it slower
	// than real time (the queue ran dry for a moment).
	if took := finished.At.Sub(started.At); took < dur-100*time.Millisecond || took > dur+time.Second {
		t.Errorf("started→finished took %s, want about the segment's %s", took, dur)
	}
	t.Logf("segment 1: %s of speech, started %s after sending, finished after %s, position %.3f s",
		dur, started.At.Sub(sent), finished.At.Sub(started.At), finished.Position)
	speaking := livekittest.Measure(livekittest.Between(sub.Since(started.At), started.At, finished.At), pack)
	t.Logf("speaking: %d frames, %.1f fps, mouth score max %.2f mean %.2f", speaking.Frames, speaking.FPS, speaking.Max, speaking.Mean)
	if speaking.FPS < 22 || speaking.FPS > 28 {
		t.Errorf("%.1f fps while speaking, want 25", speaking.FPS)
	}
	if speaking.Mean < 2*idle.Mean+1 || speaking.Max < 2*idle.Max+2 {
		t.Errorf("the mouth barely moves: speaking mean %.2f max %.2f, idle mean %.2f max %.2f", speaking.Mean, speaking.Max, idle.Mean, idle.Max)
	}

	// Segment 2, cleared a second into its playback.
	pcm2, rate2, dur2 := livekittest.Speech(t, "This second sentence is long, and the agent interrupts it before the avatar has finished speaking it.")
	ag.Send(t, avatarID, pcm2, rate2, 2, true)
	started2 := ag.Next(t, 10*time.Second)
	if started2.Method != livekit.RPCPlaybackStarted {
		t.Fatalf("RPC %+v, want %s", started2, livekit.RPCPlaybackStarted)
	}
	time.Sleep(time.Until(started2.At.Add(time.Second)))
	cleared := time.Now()
	ag.Clear(t, avatarID)
	fin := ag.Next(t, 5*time.Second)
	if fin.Method != livekit.RPCPlaybackFinished || !fin.Interrupted {
		t.Fatalf("RPC after clear %+v, want %s interrupted", fin, livekit.RPCPlaybackFinished)
	}
	// The position is what went out before the clear: about the time
	// since playback_started (less any moment the queue ran dry).
	played := cleared.Sub(started2.At).Seconds()
	t.Logf("segment 2 cleared %.3f s after playback_started: playback_position %.3f s of %s", played, fin.Position, dur2)
	if fin.Position < played-0.5 || fin.Position > played+0.2 || fin.Position >= dur2.Seconds() {
		t.Errorf("interrupted at %.3f s of %s, want about %.3f s", fin.Position, dur2, played)
	}
	time.Sleep(1500 * time.Millisecond)
	after := livekittest.Measure(livekittest.Between(sub.Since(cleared), cleared.Add(500*time.Millisecond), time.Now()), pack)
	t.Logf("after clear: %d frames, mouth score max %.2f mean %.2f", after.Frames, after.Max, after.Mean)
	if after.Mean > idle.Mean+1 {
		t.Errorf("the mouth still moves after the clear: mean %.2f, idle %.2f", after.Mean, idle.Mean)
	}

	// The agent leaves: the session ends, viewer gone.
	left := time.Now()
	ag.Leave()
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
