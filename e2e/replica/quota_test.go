package replica_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func intp(v int) *int { return &v }

// A key with max_sessions N gets 429 quota_exceeded on the N+1-th live
// session, through either replica; after deleting one a create works again;
// another key is not affected.
func TestLiveSessionQuota(t *testing.T) {
	const limit = 3
	f := testfleet.Start(t, testfleet.Options{
		Replicas: 2,
		Workers:  []testfleet.WorkerSpec{{ID: "w1", SlotsPerGPU: 8}},
		KeyLimits: map[string]auth.LimitOverrides{
			testfleet.SessionsKey: {MaxSessions: intp(limit)},
		},
	})
	var ids []string
	for i := range limit {
		ids = append(ids, createSession(t, f, i%2, testfleet.SessionsKey).ID)
	}
	for i := range 2 {
		r := f.MustDo(i, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
		if r.Status != http.StatusTooManyRequests || errorCode(t, r) != apiv1.CodeQuotaExceeded {
			t.Fatalf("replica %d: create over the quota: %d %s, want 429 quota_exceeded", i, r.Status, r.Body)
		}
	}
	createSession(t, f, 0, testfleet.OtherKey) // another key has its own quota
	if r := f.MustDo(1, "DELETE", "/v1/sessions/"+ids[0], testfleet.SessionsKey, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	createSession(t, f, 1, testfleet.SessionsKey)
	if r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{}); r.Status != http.StatusTooManyRequests {
		t.Fatalf("create over the quota again: %d %s, want 429", r.Status, r.Body)
	}
}

// A key past its request rate gets 429 rate_limited with Retry-After.
func TestRequestRateLimit(t *testing.T) {
	rate := 0.5
	f := testfleet.Start(t, testfleet.Options{
		KeyLimits: map[string]auth.LimitOverrides{
			testfleet.SessionsKey: {Rate: &rate, Burst: intp(3)},
		},
	})
	for i := range 3 {
		if r := f.MustDo(0, "GET", "/v1/sessions", testfleet.SessionsKey, nil); r.Status != http.StatusOK {
			t.Fatalf("request %d within the burst: %d %s", i, r.Status, r.Body)
		}
	}
	r := f.MustDo(0, "GET", "/v1/sessions", testfleet.SessionsKey, nil)
	if r.Status != http.StatusTooManyRequests || errorCode(t, r) != apiv1.CodeRateLimited {
		t.Fatalf("request past the burst: %d %s, want 429 rate_limited", r.Status, r.Body)
	}
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q, want 1..2 seconds at 0.5 requests/s", r.Header.Get("Retry-After"))
	}
	// Another key has its own bucket.
	if r := f.MustDo(0, "GET", "/v1/sessions", testfleet.OtherKey, nil); r.Status != http.StatusOK {
		t.Fatalf("other key: %d %s", r.Status, r.Body)
	}
}

// openEvents opens GET /v1/events and returns its status; the stream stays
// open until ctx ends.
func openEvents(ctx context.Context, t *testing.T, f *testfleet.Fleet, key string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", f.URL(0)+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	context.AfterFunc(ctx, func() { _ = resp.Body.Close() })
	return resp.StatusCode
}

// A key holds at most max_event_streams open event streams; closing one
// lets the next open.
func TestEventStreamLimit(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{
		KeyLimits: map[string]auth.LimitOverrides{testfleet.SessionsKey: {MaxEventStreams: intp(2)}},
	})
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if s := openEvents(ctx1, t, f, testfleet.SessionsKey); s != http.StatusOK {
		t.Fatalf("first stream: %d", s)
	}
	if s := openEvents(ctx2, t, f, testfleet.SessionsKey); s != http.StatusOK {
		t.Fatalf("second stream: %d", s)
	}
	r := f.MustDo(0, "GET", "/v1/events", testfleet.SessionsKey, nil)
	if r.Status != http.StatusTooManyRequests || errorCode(t, r) != apiv1.CodeQuotaExceeded {
		t.Fatalf("third stream: %d %s, want 429 quota_exceeded", r.Status, r.Body)
	}
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	if s := openEvents(ctx3, t, f, testfleet.OtherKey); s != http.StatusOK {
		t.Fatalf("other key's stream: %d", s)
	}
	cancel1()
	f.Eventually(30*time.Second, "a closed stream frees its place", func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		ok := openEvents(ctx, t, f, testfleet.SessionsKey) == http.StatusOK
		if !ok {
			cancel()
			return false
		}
		t.Cleanup(cancel)
		return true
	})
}

// 200 creates that fail (no capacity), each with its own Idempotency-Key,
// leave etcd's lease count where it was: each released claim revokes its
// lease.
func TestIdempotencyLeasesFlatAfterFailedCreates(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{})
	ctx := context.Background()
	// Let the replica's own leases (election, …) settle.
	time.Sleep(500 * time.Millisecond)
	before, err := f.Client.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{}, "Idempotency-Key", fmt.Sprintf("order-%d", i))
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("create %d with no worker: %d %s, want 503", i, r.Status, r.Body)
		}
	}
	after, err := f.Client.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if grew := len(after.Leases) - len(before.Leases); grew > 2 {
		t.Fatalf("leases grew by %d (%d → %d) after 200 failed creates, want flat", grew, len(before.Leases), len(after.Leases))
	}
}

// listAll pages through GET /v1/sessions with a key and returns the ids.
func listAll(t *testing.T, f *testfleet.Fleet, key string, limit int, state string) []string {
	t.Helper()
	var ids []string
	tok := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("listing does not end")
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if tok != "" {
			q.Set("page_token", tok)
		}
		if state != "" {
			q.Set("state", state)
		}
		r := f.MustDo(pages%len(f.Replicas), "GET", "/v1/sessions?"+q.Encode(), key, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("list: %d %s", r.Status, r.Body)
		}
		var l apiv1.SessionList
		r.JSON(t, &l)
		if len(l.Sessions) > limit {
			t.Fatalf("page of %d sessions, limit %d", len(l.Sessions), limit)
		}
		for _, s := range l.Sessions {
			ids = append(ids, s.ID)
		}
		if l.NextPageToken == "" {
			return ids
		}
		tok = l.NextPageToken
	}
}

// 1,000 sessions of two keys, written by the store's real reservation
// transactions: paging through GET /v1/sessions gives each key all of its
// own sessions exactly once and none of the other's; an admin sees all.
func TestListSessionsPaginatedPerOwner(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Replicas: 2})
	ctx := context.Background()
	owners := []string{auth.Fingerprint(testfleet.SessionsKey), auth.Fingerprint(testfleet.OtherKey)}
	want := map[string]map[string]bool{owners[0]: {}, owners[1]: {}}
	for i := range 1000 {
		o := owners[i%2]
		sess := &fleetv1.Session{Id: fmt.Sprintf("sess_%08x", uint32(i)*2654435761), Owner: o, State: fleetv1.SessionState_SESSION_STATE_READY}
		// A worker that has no record: its revision is 0.
		_, ok, err := f.Store.Reserve(ctx, fleetstore.Reservation{Worker: "ghost", GPU: 0, Slot: uint32(i)}, sess)
		if err != nil || !ok {
			t.Fatalf("reserve %d: ok=%v err=%v", i, ok, err)
		}
		want[o][sess.GetId()] = true
	}
	for i, key := range []string{testfleet.SessionsKey, testfleet.OtherKey} {
		got := listAll(t, f, key, 64, "")
		seen := map[string]bool{}
		for _, id := range got {
			if seen[id] {
				t.Fatalf("key %d: %s listed twice", i, id)
			}
			if !want[owners[i]][id] {
				t.Fatalf("key %d was listed %s, not its own", i, id)
			}
			seen[id] = true
		}
		if len(seen) != len(want[owners[i]]) {
			t.Fatalf("key %d: listed %d sessions, want %d", i, len(seen), len(want[owners[i]]))
		}
		if ready := listAll(t, f, key, 1000, "ready"); len(ready) != 500 {
			t.Fatalf("key %d: state=ready lists %d, want 500", i, len(ready))
		}
		if ended := listAll(t, f, key, 1000, "ended"); len(ended) != 0 {
			t.Fatalf("key %d: state=ended lists %d, want 0", i, len(ended))
		}
	}
	if all := listAll(t, f, testfleet.AdminKey, 300, ""); len(all) != 1000 {
		t.Fatalf("admin lists %d sessions, want 1000", len(all))
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "page_token=%21%21", "state=asleep"} {
		if r := f.MustDo(0, "GET", "/v1/sessions?"+q, testfleet.SessionsKey, nil); r.Status != http.StatusBadRequest {
			t.Errorf("GET /v1/sessions?%s: %d, want 400", q, r.Status)
		}
	}
}
