package httpapi

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// Defaults of the request body budget (Options.BodyTimeout, BodyMinRate).
const (
	defaultBodyTimeout = 10 * time.Second
	defaultBodyMinRate = 128 << 10 // bytes per second
)

// errBodyTimeout is a body that did not arrive within its budget.
var errBodyTimeout = errors.New("request body not received in time")

// bodyTimeoutError is the API error of errBodyTimeout.
func bodyTimeoutError() *apiError {
	return errorf(http.StatusRequestTimeout, apiv1.CodeRequestTimeout, "request body not received in time: send it without pauses")
}

// deadlineBody bounds the time a request body takes to arrive without a
// server-wide ReadTimeout, which would also cut event streams: before each
// read it sets the connection's read deadline to start + timeout + n/rate,
// n the bytes read so far. A body trickled in (one byte every few seconds)
// fails after about timeout; a large one sent at rate or faster arrives
// whole. The deadline is lifted at the end of the body, and stays set when
// a handler leaves the body unread, so that the server's own drain of it
// is bounded too.
type deadlineBody struct {
	body    io.ReadCloser
	rc      *http.ResponseController
	header  http.Header // the response's: "Connection: close" once expired
	start   time.Time
	timeout time.Duration
	rate    int64
	n       int64
	expired bool
}

// withBodyDeadline wraps r's body, if it has one, in a deadlineBody.
func (a *API) withBodyDeadline(w http.ResponseWriter, r *http.Request) *http.Request {
	if r.Body == nil || r.Body == http.NoBody {
		return r
	}
	b := &deadlineBody{
		body: r.Body, rc: http.NewResponseController(w), header: w.Header(), start: time.Now(),
		timeout: a.opts.BodyTimeout, rate: a.opts.BodyMinRate,
	}
	if err := b.rc.SetReadDeadline(b.deadline()); err != nil {
		return r // not a server connection (tests with a recorder)
	}
	r2 := r.WithContext(r.Context()) // a shallow copy
	r2.Body = b
	return r2
}

func (b *deadlineBody) deadline() time.Time {
	return b.start.Add(b.timeout + time.Duration(b.n)*time.Second/time.Duration(b.rate))
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.expired {
		return 0, errBodyTimeout
	}
	_ = b.rc.SetReadDeadline(b.deadline())
	n, err := b.body.Read(p)
	b.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The connection cannot be reused: the rest of the body is
		// still coming.
		b.expired = true
		b.header.Set("Connection", "close")
		return n, errBodyTimeout
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.body.Close() }
