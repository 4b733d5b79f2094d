package replica_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/webhooks"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
)

// hookLog is a webhook receiver's record, per path.
type hookLog struct {
	mu    sync.Mutex
	reqs  map[string][]hookRequest
	tries map[string]int // per webhook-id
}

type hookRequest struct {
	header http.Header
	body   []byte
	status int
}

// delivered are the events a path answered 2xx for, in order.
func (l *hookLog) delivered(t *testing.T, path string) []apiv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []apiv1.Event
	for _, r := range l.reqs[path] {
		if r.status != http.StatusOK {
			continue
		}
		var e apiv1.Event
		if err := json.Unmarshal(r.body, &e); err != nil {
			t.Errorf("webhook body %q: %v", r.body, err)
		}
		out = append(out, e)
	}
	return out
}

// TestWebhooksOfRealSessions: a key's webhook gets its own sessions'
// lifecycle and speaking events, signed with its secret, retried after a
// failure; another key's webhook gets only that key's.
func TestWebhooksOfRealSessions(t *testing.T) {
	l := &hookLog{reqs: map[string][]hookRequest{}, tries: map[string]int{}}
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		l.mu.Lock()
		defer l.mu.Unlock()
		id := r.URL.Path + " " + r.Header.Get(webhooks.HeaderID)
		l.tries[id]++
		status := http.StatusOK
		if l.tries[id] == 1 {
			status = http.StatusServiceUnavailable // every event's first attempt
		}
		l.reqs[r.URL.Path] = append(l.reqs[r.URL.Path], hookRequest{header: r.Header.Clone(), body: body, status: status})
		w.WriteHeader(status)
	}))
	defer rc.Close()
	mineSecret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	otherSecret := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	f := testfleet.Start(t, testfleet.Options{
		Workers: []testfleet.WorkerSpec{{ID: "w"}},
		Webhooks: []testfleet.Webhook{
			{Key: testfleet.SessionsKey, URL: rc.URL + "/mine", Secret: mineSecret},
			{Key: testfleet.OtherKey, URL: rc.URL + "/other", Secret: otherSecret},
		},
		WebhookOptions: webhooks.Options{Retry: webhooks.Retry{MaxAttempts: 5, Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}},
	})
	// A new endpoint's consumer starts at the next event: wait for both.
	js := f.ControlPlaneJetStream(t)
	for _, c := range []struct{ key, url string }{{testfleet.SessionsKey, rc.URL + "/mine"}, {testfleet.OtherKey, rc.URL + "/other"}} {
		f.Eventually(30*time.Second, "the webhook consumer", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := js.Consumer(ctx, fleetbus.StreamName, webhooks.ConsumerName(auth.Fingerprint(c.key), c.url))
			return err == nil
		})
	}

	mine := createSession(t, f, 0, testfleet.SessionsKey)
	other := createSession(t, f, 0, testfleet.OtherKey)
	f.Eventually(30*time.Second, "mine ready", func() bool { return getSession(t, f, 0, mine.ID).State == apiv1.StateReady })
	holder, ok := f.Worker("w").Agent.Runtime().(*runtimetest.Holder)
	if !ok {
		t.Fatalf("worker runtime is %T, want the Holder", f.Worker("w").Agent.Runtime())
	}
	// A worker's event passes the origin check against etcd's record.
	if err := holder.EmitSpeaking(mine.ID, true, 80*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ id, key string }{{mine.ID, testfleet.SessionsKey}, {other.ID, testfleet.OtherKey}} {
		if r := f.MustDo(0, "DELETE", "/v1/sessions/"+c.id, c.key, nil); r.Status != 204 {
			t.Fatalf("delete: %d", r.Status)
		}
	}
	hasEnded := func(path, id string) bool {
		for _, e := range l.delivered(t, path) {
			if e.Type == fleetbus.SessionEnded && e.SessionID == id {
				return true
			}
		}
		return false
	}
	f.Eventually(60*time.Second, "both endpoints got their session's end", func() bool {
		return hasEnded("/mine", mine.ID) && hasEnded("/other", other.ID)
	})
	f.Eventually(30*time.Second, "mine got the speaking event", func() bool {
		for _, e := range l.delivered(t, "/mine") {
			if e.Type == fleetbus.SessionSpeakingStarted && e.SessionID == mine.ID {
				return true
			}
		}
		return false
	})
	// Every delivery acknowledged: nothing pending, nothing to redeliver.
	for _, c := range []struct{ key, url string }{{testfleet.SessionsKey, rc.URL + "/mine"}, {testfleet.OtherKey, rc.URL + "/other"}} {
		f.Eventually(30*time.Second, "the webhook consumer to settle", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cons, err := js.Consumer(ctx, fleetbus.StreamName, webhooks.ConsumerName(auth.Fingerprint(c.key), c.url))
			if err != nil {
				return false
			}
			info, err := cons.Info(ctx)
			return err == nil && info.NumPending == 0 && info.NumAckPending == 0
		})
	}
	for _, c := range []struct {
		path, secret, session string
	}{{"/mine", mineSecret, mine.ID}, {"/other", otherSecret, other.ID}} {
		l.mu.Lock()
		reqs := append([]hookRequest(nil), l.reqs[c.path]...)
		l.mu.Unlock()
		types := map[string]int{}
		for _, r := range reqs {
			if err := webhooks.Verify(c.secret, r.header, r.body, 0); err != nil {
				t.Errorf("%s: a delivery does not verify with its endpoint's secret: %v", c.path, err)
			}
			var e apiv1.Event
			if err := json.Unmarshal(r.body, &e); err != nil {
				t.Fatal(err)
			}
			if e.SessionID != c.session || e.Session == nil || e.Session.ID != c.session || e.ID != r.header.Get(webhooks.HeaderID) {
				t.Errorf("%s got event %s %s of session %s, want only session %s's, webhook-id = event id", c.path, e.ID, e.Type, e.SessionID, c.session)
			}
			if r.status == http.StatusOK {
				types[e.Type]++
			}
		}
		t.Logf("%s: %d requests, delivered %v", c.path, len(reqs), types)
		for _, typ := range []string{fleetbus.SessionReady, fleetbus.SessionEnded} {
			if types[typ] != 1 {
				t.Errorf("%s: %s delivered %d times, want once", c.path, typ, types[typ])
			}
		}
	}
}
