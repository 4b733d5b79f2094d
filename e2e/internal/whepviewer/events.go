package whepviewer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Event is one server-sent event of a session's event stream
// (GET /v1/sessions/{id}/events): its SSE id, its type and its JSON.
type Event struct {
	ID   string
	Type string
	Data []byte
}

// StatusError is a refused WHEP or events request (401, 403, 404, …).
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
}

// StreamEvents reads a session's events with its viewer token and calls fn
// with each one, in order, until ctx ends (nil) or the stream does (an
// error). lastID, when set, resumes after that event (Last-Event-ID). It
// returns the id of the last event seen, for the next resume.
func StreamEvents(ctx context.Context, client *http.Client, eventsURL, token, lastID string, fn func(Event)) (string, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, eventsURL, nil)
	if err != nil {
		return lastID, fmt.Errorf("events request: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if token != "" { // else the URL carries it (?access_token=)
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return lastID, nil
		}
		return lastID, fmt.Errorf("events GET: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return lastID, fmt.Errorf("events GET: %w", &StatusError{Status: res.StatusCode, Body: string(bytes.TrimSpace(b))})
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var cur Event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.Type != "" || cur.Data != nil {
				if cur.ID != "" {
					lastID = cur.ID
				}
				fn(cur)
			}
			cur = Event{}
		case strings.HasPrefix(line, ":"):
			// comment (greeting, keep-alive)
		case strings.HasPrefix(line, "id:"):
			cur.ID = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "event:"):
			cur.Type = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			cur.Data = append(cur.Data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")...)
		}
	}
	if ctx.Err() != nil {
		return lastID, nil
	}
	if err := sc.Err(); err != nil {
		return lastID, fmt.Errorf("events stream: %w", err)
	}
	return lastID, fmt.Errorf("events stream: %w", io.ErrUnexpectedEOF)
}
