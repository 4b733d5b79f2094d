package livekit

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit/livekittest"
	lkproto "github.com/livekit/protocol/livekit"
)

// TestAgentAvatarOverREST: POST /v1/sessions with a livekit room makes the
// worker binary join a real livekit-server's room as the agent's avatar;
// the Session shows the room's URL and state but never the token; the
// agent's speech moves the avatar's lips at 25 fps with the playback RPCs;
// lk.clear_buffer interrupts it; a bad room is 400 invalid_livekit; the
// agent leaving ends the session with viewer_gone. The worker joins
// through a proxy that cuts its signalling connection once: GET shows the
// live state, reconnecting and then joined with one reconnect.
func TestAgentAvatarOverREST(t *testing.T) {
	srv := livekittest.Start(t)
	px := livekittest.StartProxy(t, srv)
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{Args: []string{"--prewarm", "1"}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const room, agentID, avatarID = "support-call", "voice-agent", "avatar"
	ag := livekittest.JoinAgent(t, srv, room, agentID)
	sub := livekittest.JoinSubscriber(t, srv, room, avatarID)

	// A malformed room is refused before anything is placed.
	body, _ := json.Marshal(map[string]any{"livekit": map[string]string{"url": "ftp://" + strings.TrimPrefix(srv.URL, "ws://"), "token": "x"}})
	var bad apiv1.ErrorBody
	if err := binfleet.Call(ctx, http.MethodPost, f.URL+"/v1/sessions", f.APIKey, "application/json", body, http.StatusBadRequest, &bad); err != nil || bad.Error.Code != apiv1.CodeInvalidLiveKit {
		t.Fatalf("bad room: %+v %v, want 400 invalid_livekit", bad, err)
	}

	// A token the LiveKit server refuses (signed with another secret) fails
	// the create at once, naming the reason but not the token.
	forged := livekittest.TokenWith(t, livekittest.APIKey, "another-secret-0123456789abcdef0123456789", room, avatarID,
		lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: agentID})
	body, _ = json.Marshal(apiv1.CreateSessionRequest{LiveKit: &apiv1.LiveKitJoin{URL: srv.URL, Token: forged}})
	bad = apiv1.ErrorBody{}
	if err := binfleet.Call(ctx, http.MethodPost, f.URL+"/v1/sessions", f.APIKey, "application/json", body, http.StatusBadRequest, &bad); err != nil ||
		bad.Error.Code != apiv1.CodeInvalidLiveKit || !strings.Contains(bad.Error.Message, "join") {
		t.Fatalf("refused token: %+v %v, want 400 invalid_livekit", bad, err)
	}
	if strings.Contains(bad.Error.Message, forged) || strings.Contains(bad.Error.Message, strings.Split(forged, ".")[2]) {
		t.Fatalf("the error holds the token: %s", bad.Error.Message)
	}
	t.Logf("refused token: %s", bad.Error.Message)

	tok := livekittest.Token(t, room, avatarID, lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: agentID})
	// The refused create's slot is free again once the control plane's
	// cache has seen it go (503 no_capacity until then, as for any client).
	var s apiv1.Session
	f.WaitUntil(t, "session created", 10*time.Second, func() error {
		var err error
		s, err = f.CreateSession(ctx, apiv1.CreateSessionRequest{LiveKit: &apiv1.LiveKitJoin{URL: px.URL, Token: tok}})
		return err
	})
	var raw json.RawMessage
	f.WaitUntil(t, "session ready", time.Minute, func() error {
		if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/sessions/"+s.ID, &raw); err != nil {
			return err
		}
		var got apiv1.Session
		if err := json.Unmarshal(raw, &got); err != nil {
			return err
		}
		if got.State != apiv1.StateReady {
			return fmt.Errorf("state %s", got.State)
		}
		// reconnects is there only with the worker's live state.
		if got.LiveKit == nil || got.LiveKit.URL != px.URL || got.LiveKit.State != apiv1.LiveKitJoined ||
			got.LiveKit.Reconnects == nil || *got.LiveKit.Reconnects != 0 {
			return fmt.Errorf("livekit %+v", got.LiveKit)
		}
		return nil
	})
	if strings.Contains(string(raw), tok) || strings.Contains(string(raw), strings.Split(tok, ".")[2]) {
		t.Fatalf("GET returns the token: %s", raw)
	}

	// The worker's signalling connection is cut, and refused while the
	// test looks: the session stays ready, its room connection is
	// reconnecting; let through again, it is joined after one reconnect.
	liveKit := func(want string, reconnects uint32) func() error {
		return func() error {
			got, err := f.GetSession(ctx, s.ID)
			if err != nil {
				return err
			}
			lk := got.LiveKit
			if got.State != apiv1.StateReady || lk == nil || lk.State != want || lk.Reconnects == nil || *lk.Reconnects != reconnects || lk.LastError == "" {
				return fmt.Errorf("state %s, livekit %+v", got.State, lk)
			}
			return nil
		}
	}
	px.Refuse(true)
	if n := px.Drop(); n == 0 {
		t.Fatal("the worker's connection did not go through the proxy")
	}
	cut := time.Now()
	f.WaitUntil(t, "livekit reconnecting", 10*time.Second, liveKit(apiv1.LiveKitReconnecting, 1))
	t.Logf("GET shows reconnecting %s after the cut", time.Since(cut))
	px.Refuse(false)
	f.WaitUntil(t, "livekit joined again", 30*time.Second, liveKit(apiv1.LiveKitJoined, 1))
	t.Logf("GET shows joined again %s after the cut", time.Since(cut))

	pack, err := avatar.Default()
	if err != nil {
		t.Fatal(err)
	}
	f.WaitUntil(t, "avatar video at the subscriber", 30*time.Second, func() error {
		if v, _ := sub.Count(); v < 25 {
			return fmt.Errorf("%d frames", v)
		}
		return nil
	})
	idleFrom := time.Now()
	time.Sleep(2 * time.Second)
	idle := livekittest.Measure(sub.Since(idleFrom), pack)

	pcm, rate, dur := livekittest.Speech(t, "Thanks for calling. I can see you are asking about your order; let me look it up for you.")
	ag.Send(t, avatarID, pcm, rate, 2, true)
	started := ag.Next(t, 15*time.Second)
	finished := ag.Next(t, dur+15*time.Second)
	if started.Method != livekit.RPCPlaybackStarted || finished.Method != livekit.RPCPlaybackFinished || finished.Interrupted {
		t.Fatalf("RPCs %+v then %+v, want started then finished", started, finished)
	}
	if math.Abs(finished.Position-dur.Seconds()) > 0.05 {
		t.Errorf("playback_position %.3f, want %.3f", finished.Position, dur.Seconds())
	}
	speaking := livekittest.Measure(livekittest.Between(sub.Since(started.At), started.At, finished.At), pack)
	t.Logf("idle %d frames %.1f fps mouth %.2f/%.2f; speaking %d frames %.1f fps mouth %.2f/%.2f (mean/max)",
		idle.Frames, idle.FPS, idle.Mean, idle.Max, speaking.Frames, speaking.FPS, speaking.Mean, speaking.Max)
	if speaking.FPS < 22 || speaking.FPS > 28 {
		t.Errorf("%.1f fps while speaking, want 25", speaking.FPS)
	}
	if speaking.Mean < 2*idle.Mean+1 {
		t.Errorf("the mouth barely moves: speaking %.2f, idle %.2f", speaking.Mean, idle.Mean)
	}

	// The second segment is cleared while its stream is still open, as an
	// agent does when the user talks over it; the agent closes it after.
	w := ag.Send(t, avatarID, pcm, rate, 2, false)
	if c := ag.Next(t, 15*time.Second); c.Method != livekit.RPCPlaybackStarted {
		t.Fatalf("RPC %+v, want playback_started", c)
	}
	time.Sleep(500 * time.Millisecond)
	ag.Clear(t, avatarID)
	w.Close()
	if c := ag.Next(t, 10*time.Second); c.Method != livekit.RPCPlaybackFinished || !c.Interrupted || c.Position >= dur.Seconds() {
		t.Fatalf("after lk.clear_buffer %+v, want playback_finished interrupted before %.3f s", c, dur.Seconds())
	}

	ag.Leave()
	f.WaitUntil(t, "session ended with viewer_gone", 20*time.Second, func() error {
		got, err := f.GetSession(ctx, s.ID)
		if err != nil {
			return err
		}
		if got.State != apiv1.StateEnded || got.EndReason != "viewer_gone" || got.LiveKit == nil || got.LiveKit.State != apiv1.LiveKitLeft {
			return fmt.Errorf("state %s, end reason %q, livekit %+v", got.State, got.EndReason, got.LiveKit)
		}
		return nil
	})
}
