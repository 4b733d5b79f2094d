package apiclient

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// ListSessions follows next_page_token to the last page.
func TestListSessionsPages(t *testing.T) {
	pages := map[string]string{
		"":   `{"sessions":[{"id":"a"},{"id":"b"}],"next_page_token":"t1"}`,
		"t1": `{"sessions":[{"id":"c"}],"next_page_token":"t2"}`,
		"t2": `{"sessions":[{"id":"d"}]}`,
	}
	rt := &roundTrip{}
	rt.resp = func(r *http.Request) *http.Response {
		body, ok := pages[r.URL.Query().Get("page_token")]
		if !ok || r.URL.Query().Get("limit") != "1000" {
			return respond(400, "application/json", strings.NewReader(`{"error":{"code":"invalid_request","message":"bad"}}`))(r)
		}
		return respond(200, "application/json", strings.NewReader(body))(r)
	}
	c := newTestClient(t, rt)
	l, err := c.ListSessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range l {
		ids = append(ids, s.ID)
	}
	if got := fmt.Sprint(ids); got != "[a b c d]" || len(rt.reqs) != 3 {
		t.Fatalf("listed %s in %d requests, want [a b c d] in 3", got, len(rt.reqs))
	}
	p, err := c.ListSessionsPage(context.Background(), ListOptions{Limit: 1000, PageToken: "t1", State: "ready"})
	if err != nil {
		t.Fatal(err)
	}
	if q := rt.reqs[3].URL.Query(); q.Get("state") != "ready" || p.NextPageToken != "t2" {
		t.Fatalf("page request %v gave next %q", q, p.NextPageToken)
	}
}
