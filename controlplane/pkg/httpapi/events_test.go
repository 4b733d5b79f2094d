package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// sseMessage is one server-sent event as read off the wire.
type sseMessage struct{ id, event, data string }

// readSSE reads messages until it has n of them (comments skipped).
func readSSE(t *testing.T, sc *bufio.Scanner, n int) []sseMessage {
	t.Helper()
	var (
		out []sseMessage
		cur sseMessage
	)
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur != (sseMessage{}) {
				out = append(out, cur)
			}
			cur = sseMessage{}
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	if len(out) < n {
		t.Fatalf("stream ended after %d of %d messages: %v", len(out), n, sc.Err())
	}
	return out
}

// TestEventsGap: a client resuming after an event the stream no longer
// holds (here a stream kept to 5 messages) is told so by a gap event, then
// gets what the stream holds; one resuming inside what is kept is not.
func TestEventsGap(t *testing.T) {
	ns, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, err := fleetbus.NewPublisher(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fleetbus.StreamConfig(time.Hour)
	cfg.MaxMsgs = 5
	if _, err := pub.JetStream().CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		s := &fleetv1.Session{Id: "s" + string(rune('a'+i)), Owner: "o", State: fleetv1.SessionState_SESSION_STATE_READY}
		if err := pub.Publish(ctx, fleetbus.SessionEvent(fleetbus.SessionReady, s)); err != nil {
			t.Fatal(err)
		}
	}
	keys := &auth.Keys{}
	if err := keys.Add(testKey, auth.ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Options{Keys: keys, Events: pub.JetStream()}))
	defer srv.Close()

	for _, tc := range []struct {
		lastID  string
		gap     string
		firstID string
	}{
		{"2", `{"requested":2,"first_available":6}`, "6"},
		{"5", "", "6"},
		{"7", "", "8"},
	} {
		t.Run("after "+tc.lastID, func(t *testing.T) {
			rctx, rcancel := context.WithCancel(ctx)
			defer rcancel()
			req, _ := http.NewRequestWithContext(rctx, "GET", srv.URL+"/v1/events", nil)
			req.Header.Set("Authorization", "Bearer "+testKey)
			req.Header.Set("Last-Event-ID", tc.lastID)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			msgs := readSSE(t, bufio.NewScanner(resp.Body), 2)
			first := msgs[0]
			if tc.gap != "" {
				if first.event != "gap" || first.id != "" || first.data != tc.gap {
					t.Fatalf("first message %+v, want a gap event %s without id", first, tc.gap)
				}
				var g gapEvent
				if err := json.Unmarshal([]byte(first.data), &g); err != nil {
					t.Fatal(err)
				}
				first = msgs[1]
			}
			if first.event != fleetbus.SessionReady || first.id != tc.firstID {
				t.Fatalf("first event %+v, want session.ready with id %s", first, tc.firstID)
			}
		})
	}
	// The stream's limits also show to a client in JetStream terms.
	st, err := pub.JetStream().Stream(ctx, fleetbus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.FirstSeq != 6 {
		t.Fatalf("stream first sequence %v (%v), want 6", info, err)
	}
}

// TestMovedEventJSON: a session.moved event carries from_worker, to_worker,
// reason and its etcd revision in the API's JSON.
func TestMovedEventJSON(t *testing.T) {
	e := fleetbus.SessionEvent(fleetbus.SessionMoved, &fleetv1.Session{Id: "s1", WorkerId: "w2", State: fleetv1.SessionState_SESSION_STATE_READY})
	e.Id, e.Revision, e.FromWorker, e.ToWorker, e.Reason = "42-1", 42, "w1", "w2", "drain"
	b, err := json.Marshal(toEvent(e, "http://x"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"id": "42-1", "type": "session.moved", "from_worker": "w1", "to_worker": "w2", "reason": "drain", "revision": 42.0} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (%s)", k, got[k], want, b)
		}
	}
}
