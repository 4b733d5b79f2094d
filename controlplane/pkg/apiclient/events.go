package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// maxEventBytes bounds one server-sent event (its line and its data).
const maxEventBytes = 1 << 20

// Events streams lifecycle events (GET /v1/events, server-sent events) and
// calls fn with each, in order, on the calling goroutine. It blocks until
// ctx is done (returning ctx.Err()), fn returns an error (returned
// wrapped), the stream breaks (an error) or the server ends the stream
// cleanly (nil). It does not reconnect: a caller that wants to follow the
// fleet for long calls it in a loop.
func (c *Client) Events(ctx context.Context, fn func(apiv1.Event) error) error {
	if fn == nil {
		return errors.New("events: nil callback")
	}
	req, err := c.newRequest(ctx, call{
		method: http.MethodGet, path: "/v1/events",
		header: http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}},
	})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	defer closeBody(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("events: %w", errorFromResponse(resp))
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return fmt.Errorf("events: unexpected content type %q", resp.Header.Get("Content-Type"))
	}
	sr := newSSEReader(resp.Body)
	for {
		msg, err := sr.next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("events: read stream: %w", err)
		}
		var ev apiv1.Event
		if err := json.Unmarshal([]byte(msg.data), &ev); err != nil {
			return fmt.Errorf("events: decode event %q: %w", msg.id, err)
		}
		if err := fn(ev); err != nil {
			return fmt.Errorf("events: callback: %w", err)
		}
	}
}
