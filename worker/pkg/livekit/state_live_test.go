package livekit_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit/livekittest"
	lkproto "github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

// waitStatus polls the avatar's status until ok, or fails the test.
func waitStatus(t *testing.T, av *livekit.Avatar, within time.Duration, what string, ok func(livekit.Status) bool) livekit.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := av.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %+v after %s, want %s", st, within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits, when the test ends, until the goroutines it started are
// gone: a server-initiated leave can race with the SDK's reconnect of the
// same dropped connection, whose restart then waits out its connect
// timeout after the room closed (server-sdk-go's engine does not cancel
// it). Bounded by within; goleak (TestMain) reports what is left.
func settle(t *testing.T, within time.Duration) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(within)
		for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// TestConnectionState: against a real livekit-server, through a proxy
// that can cut the avatar's signalling connection: a join shows joined; a
// cut connection shows reconnecting (the proxy refusing it meanwhile), then
// joined again with one reconnect, the session going on and the agent
// counted again; the server removing the avatar shows left with the
// reason, and ends the session.
func TestConnectionState(t *testing.T) {
	settle(t, 10*time.Second) // first: its cleanup runs last
	srv := livekittest.Start(t)
	px := livekittest.StartProxy(t, srv)
	const room = "flaky"
	livekittest.JoinAgent(t, srv, room, "agent")
	h := newHooks()
	av, err := livekit.Join(t.Context(), livekit.Options{URL: px.URL, Hooks: h.get(), ConnectTimeout: 5 * time.Second,
		Token: livekittest.Token(t, room, "avatar", lkproto.ParticipantInfo_AGENT, map[string]string{livekit.AttrPublishOnBehalf: "agent"})})
	if err != nil {
		t.Fatal(err)
	}
	defer av.Close()
	if st := av.Status(); st != (livekit.Status{State: livekit.StateJoined}) {
		t.Fatalf("after the join: %+v, want joined", st)
	}
	waitStatus(t, av, 10*time.Second, "the agent found", func(livekit.Status) bool { return av.AgentIdentity() == "agent" })

	px.Refuse(true)
	if n := px.Drop(); n == 0 {
		t.Fatal("no connection went through the proxy")
	}
	dropped := time.Now()
	st := waitStatus(t, av, 10*time.Second, "reconnecting", func(s livekit.Status) bool { return s.State == livekit.StateReconnecting })
	t.Logf("reconnecting %s after the cut: %+v", time.Since(dropped), st)
	if st.Reconnects != 1 || st.LastError == "" {
		t.Errorf("while reconnecting: %+v, want 1 reconnect and a reason", st)
	}
	time.Sleep(500 * time.Millisecond)
	if st := av.Status(); st.State != livekit.StateReconnecting {
		t.Errorf("with the proxy refusing: %+v, want still reconnecting", st)
	}
	px.Refuse(false)
	st = waitStatus(t, av, 30*time.Second, "joined again", func(s livekit.Status) bool { return s.State == livekit.StateJoined })
	t.Logf("joined again %s after the cut: %+v", time.Since(dropped), st)
	if st.Reconnects != 1 {
		t.Errorf("after the reconnect: %+v, want 1 reconnect", st)
	}
	select {
	case msg := <-h.ended:
		t.Fatalf("the reconnect ended the session: %s", msg)
	default:
	}
	h.mu.Lock()
	present := append([]bool(nil), h.present...)
	h.mu.Unlock()
	t.Logf("agent presence reports: %v", present)
	if len(present) == 0 || !present[len(present)-1] {
		t.Errorf("presence %v, want the agent counted after the reconnect", present)
	}

	rs := lksdk.NewRoomServiceClient(srv.HTTP, livekittest.APIKey, livekittest.APISecret)
	if _, err := rs.RemoveParticipant(t.Context(), &lkproto.RoomParticipantIdentity{Room: room, Identity: "avatar"}); err != nil {
		t.Fatal(err)
	}
	h.wantEnd(t, 10*time.Second, "")
	st = waitStatus(t, av, 5*time.Second, "left", func(s livekit.Status) bool { return s.State == livekit.StateLeft })
	if st.LastError != string(lksdk.ParticipantRemoved) || st.Reconnects != 1 {
		t.Errorf("after the removal: %+v, want left, %q, 1 reconnect", st, lksdk.ParticipantRemoved)
	}
}
