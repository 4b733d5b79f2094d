package whepviewer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestStreamEvents reads server-sent events as the control plane writes
// them (comments, id, event, data), reports the last id for a resume, sends
// Last-Event-ID and the token, and turns a refusal into a StatusError.
func TestStreamEvents(t *testing.T) {
	var gotLast, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotLast, gotAuth = r.Header.Get("Last-Event-ID"), r.Header.Get("Authorization")
		if r.URL.Query().Get("deny") != "" {
			http.Error(w, `{"error":{"code":"forbidden"}}`, http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, ": avatarfleet events\n\n")
		_, _ = io.WriteString(w, "id: 7\nevent: session.moved\ndata: {\"a\":1}\n\n")
		_, _ = io.WriteString(w, ": keep-alive\n\n")
		_, _ = io.WriteString(w, "id: 9\nevent: session.ended\ndata: {\"b\":2}\n\n")
	}))
	defer srv.Close()

	var got []string
	last, err := StreamEvents(context.Background(), nil, srv.URL, "tok", "5", func(e Event) {
		got = append(got, fmt.Sprintf("%s %s %s", e.ID, e.Type, e.Data))
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("end of stream: %v, want unexpected EOF", err)
	}
	want := []string{`7 session.moved {"a":1}`, `9 session.ended {"b":2}`}
	if fmt.Sprint(got) != fmt.Sprint(want) || last != "9" {
		t.Fatalf("events %q (last %q), want %q (last 9)", got, last, want)
	}
	if gotLast != "5" || gotAuth != "Bearer tok" {
		t.Fatalf("request headers Last-Event-ID %q, Authorization %q", gotLast, gotAuth)
	}

	_, err = StreamEvents(context.Background(), nil, srv.URL+"?deny=1", "", "", func(Event) {})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || gotAuth != "" {
		t.Fatalf("refused stream: %v (Authorization %q), want 403 and no header", err, gotAuth)
	}
}
