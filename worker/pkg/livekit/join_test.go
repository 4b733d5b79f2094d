package livekit_test

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit/livekittest"
	lkproto "github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

// hooks records what the avatar asks of its session; with play, a player
// goroutine "plays" what was pushed at once, in order (calls its marks).
type hooks struct {
	mu      sync.Mutex
	pushed  int
	present []bool
	ended   chan string
	marks   chan func()
}

func newHooks() *hooks { return &hooks{ended: make(chan string, 1)} }

// play starts the player; it stops when the test ends.
func (h *hooks) play(t *testing.T) {
	h.marks = make(chan func(), 1<<14)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case m := <-h.marks:
				m()
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
}

func (h *hooks) get() livekit.Hooks {
	return livekit.Hooks{
		PushSpeech: func(pcm []float32, sent func()) bool {
			h.mu.Lock()
			h.pushed += len(pcm)
			h.mu.Unlock()
			if h.marks != nil && sent != nil {
				h.marks <- sent
			}
			return true
		},
		Interrupt: func() {},
		Present: func(in bool) {
			h.mu.Lock()
			h.present = append(h.present, in)
			h.mu.Unlock()
		},
		End: func(msg string) { h.ended <- msg },
	}
}

func (h *hooks) wantEnd(t *testing.T, within time.Duration, contains string) {
	t.Helper()
	select {
	case msg := <-h.ended:
		if !strings.Contains(msg, contains) {
			t.Errorf("ended: %q, want it to say %q", msg, contains)
		}
	case <-time.After(within):
		t.Fatalf("the avatar did not end its session within %s", within)
	}
}

// TestJoinRefused: a bad URL or token is refused before any connection,
// and a token the server does not accept fails the join.
func TestJoinRefused(t *testing.T) {
	srv := livekittest.Start(t)
	h := newHooks()
	good := livekittest.Token(t, "r", "avatar", lkproto.ParticipantInfo_AGENT, nil)
	forged := good[:strings.LastIndex(good, ".")+1] + "c2lnbmF0dXJl"
	for _, tc := range []struct{ name, url, token, want string }{
		{"bad scheme", "ftp://127.0.0.1:1", good, "scheme"},
		{"not a JWT", srv.URL, "abc", "JWT"},
		{"forged signature", srv.URL, forged, "join"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			av, err := livekit.Join(ctx, livekit.Options{URL: tc.url, Token: tc.token, Hooks: h.get(), ConnectTimeout: 5 * time.Second})
			if err == nil {
				_ = av.Close()
				t.Fatal("joined")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), tc.token) {
				t.Errorf("error %q: want it to say %q and never hold the token", err, tc.want)
			}
		})
	}
}

// TestNoAgentEndsSession: with no agent in the room within AgentWait the
// avatar ends its session.
func TestNoAgentEndsSession(t *testing.T) {
	srv := livekittest.Start(t)
	h := newHooks()
	av, err := livekit.Join(t.Context(), livekit.Options{URL: srv.URL, Hooks: h.get(), AgentWait: time.Second,
		Token: livekittest.Token(t, "lonely", "avatar", lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: "nobody"})})
	if err != nil {
		t.Fatal(err)
	}
	defer av.Close()
	h.wantEnd(t, 10*time.Second, "no agent")
}

// TestOnlyTheAgentDrives: another participant's audio stream is ignored
// and its lk.clear_buffer rejected; the room being deleted ends the
// session.
func TestOnlyTheAgentDrives(t *testing.T) {
	srv := livekittest.Start(t)
	const room = "guarded"
	ag := livekittest.JoinAgent(t, srv, room, "agent")
	other := livekittest.JoinAgent(t, srv, room, "intruder")
	h := newHooks()
	av, err := livekit.Join(t.Context(), livekit.Options{URL: srv.URL, Hooks: h.get(),
		Token: livekittest.Token(t, room, "avatar", lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: "agent"})})
	if err != nil {
		t.Fatal(err)
	}
	defer av.Close()
	deadline := time.Now().Add(10 * time.Second)
	for av.AgentIdentity() != "agent" {
		if time.Now().After(deadline) {
			t.Fatalf("agent identity %q, want agent", av.AgentIdentity())
		}
		time.Sleep(20 * time.Millisecond)
	}
	pcm, rate, _ := livekittest.Speech(t, "Not the agent.")
	other.Send(t, "avatar", pcm, rate, 2, true)
	timeout := 5 * time.Second
	res, err := other.Room().LocalParticipant.PerformRpc(lksdk.PerformRpcParams{DestinationIdentity: "avatar", Method: livekit.RPCClearBuffer, ResponseTimeout: &timeout})
	if err != nil || res == nil || *res != "reject" {
		t.Errorf("clear_buffer from another participant: %v %v, want reject", res, err)
	}
	time.Sleep(time.Second)
	h.mu.Lock()
	pushed, present := h.pushed, h.present
	h.mu.Unlock()
	if pushed != 0 {
		t.Errorf("%d samples of another participant's audio were queued", pushed)
	}
	if len(present) != 1 || !present[0] {
		t.Errorf("presence reports %v, want [true]", present)
	}
	ag.Clear(t, "avatar") // the agent's is answered ok (nothing to clear)

	rs := lksdk.NewRoomServiceClient(srv.HTTP, livekittest.APIKey, livekittest.APISecret)
	if _, err := rs.DeleteRoom(t.Context(), &lkproto.DeleteRoomRequest{Room: room}); err != nil {
		t.Fatal(err)
	}
	h.wantEnd(t, 10*time.Second, "")
}

// TestReplacedAvatarDoesNotEndSession: a second avatar joining with the
// same identity (the session moved to another worker) takes the first's
// place; the first does not end its session, it stops counting the agent
// as a viewer.
func TestReplacedAvatarDoesNotEndSession(t *testing.T) {
	srv := livekittest.Start(t)
	const room = "moving"
	livekittest.JoinAgent(t, srv, room, "agent")
	tok := livekittest.Token(t, room, "avatar", lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: "agent"})
	first, second := newHooks(), newHooks()
	a1, err := livekit.Join(t.Context(), livekit.Options{URL: srv.URL, Token: tok, Hooks: first.get()})
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()
	waitPresent := func(h *hooks, want []bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			h.mu.Lock()
			got := append([]bool(nil), h.present...)
			h.mu.Unlock()
			if len(got) == len(want) {
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("presence %v, want %v", got, want)
					}
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("presence %v, want %v", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitPresent(first, []bool{true})
	a2, err := livekit.Join(t.Context(), livekit.Options{URL: srv.URL, Token: tok, Hooks: second.get()})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	waitPresent(second, []bool{true})
	waitPresent(first, []bool{true, false})
	select {
	case msg := <-first.ended:
		t.Fatalf("the replaced avatar ended its session: %s", msg)
	case msg := <-second.ended:
		t.Fatalf("the new avatar ended its session: %s", msg)
	case <-time.After(2 * time.Second):
	}
}

// TestLostTrailer: a segment whose stream never gets its trailer ends when
// the next stream arrives (its data played in full), or after the idle
// timeout when none does; each gets playback_started and _finished.
func TestLostTrailer(t *testing.T) {
	srv := livekittest.Start(t)
	const room = "lossy"
	ag := livekittest.JoinAgent(t, srv, room, "agent")
	h := newHooks()
	h.play(t)
	av, err := livekit.Join(t.Context(), livekit.Options{URL: srv.URL, Hooks: h.get(), StreamIdleTimeout: time.Second,
		Token: livekittest.Token(t, room, "avatar", lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: "agent"})})
	if err != nil {
		t.Fatal(err)
	}
	defer av.Close()
	pcm, rate, dur := livekittest.Speech(t, "A segment whose trailer is lost.")
	want := func(method string, position float64) {
		t.Helper()
		c := ag.Next(t, 10*time.Second)
		if c.Method != method || c.Interrupted || (method == livekit.RPCPlaybackFinished && math.Abs(c.Position-position) > 0.05) {
			t.Fatalf("RPC %+v, want %s at %.3f s", c, method, position)
		}
	}
	// A newer stream ends the open one.
	ag.Send(t, "avatar", pcm, rate, 2, false)
	want(livekit.RPCPlaybackStarted, 0)
	start := time.Now()
	ag.Send(t, "avatar", pcm, rate, 2, true)
	want(livekit.RPCPlaybackFinished, dur.Seconds())
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the open segment ended %s after the next stream came, want at once", d)
	}
	want(livekit.RPCPlaybackStarted, 0)
	want(livekit.RPCPlaybackFinished, dur.Seconds())
	// With no newer stream, the idle timeout ends it.
	ag.Send(t, "avatar", pcm, rate, 2, false)
	want(livekit.RPCPlaybackStarted, 0)
	want(livekit.RPCPlaybackFinished, dur.Seconds())
}
