package apiclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// maxFallbackMessage bounds the message taken from a non-JSON error body.
const maxFallbackMessage = 200

// APIError is a non-2xx response of the API. Use errors.As to get it from
// an error returned by a Client method.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the machine-readable code of the error envelope (apiv1.Code*).
	// For a body without the envelope (a proxy's HTML page, say) it is
	// "http_<status>".
	Code string
	// Message is the human message of the envelope, or the start of a
	// non-JSON body, or the status text.
	Message string
	// RetryAfter is the Retry-After header as a duration (0 when absent).
	RetryAfter time.Duration
}

// Error returns "<code>: <message>".
func (e *APIError) Error() string {
	return e.Code + ": " + e.Message
}

// HasCode reports whether err is (or wraps) an *APIError with code.
func HasCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// errorFromResponse builds the APIError of a non-2xx response, reading at
// most maxErrorBytes of its body. It never fails: an unreadable or
// non-envelope body falls back to the status.
func errorFromResponse(resp *http.Response) *APIError {
	ae := &APIError{
		Status:     resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	// A body cut at the limit (or by a read error) still helps the fallback.
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	var env apiv1.ErrorBody
	if err := json.Unmarshal(data, &env); err == nil && env.Error.Code != "" {
		ae.Code = env.Error.Code
		ae.Message = env.Error.Message
		if ae.Message == "" {
			ae.Message = statusText(resp.StatusCode)
		}
		return ae
	}
	ae.Code = "http_" + strconv.Itoa(resp.StatusCode)
	ae.Message = fallbackMessage(resp, data)
	return ae
}

// fallbackMessage summarises a body that is not the error envelope: the
// first line of a plain-text body, else the status text.
func fallbackMessage(resp *http.Response, data []byte) string {
	ct := strings.ToLower(resp.Header.Get("Content-Type"))
	text := strings.TrimSpace(string(data))
	if text == "" || strings.Contains(ct, "html") || !utf8.ValidString(text) {
		return statusText(resp.StatusCode)
	}
	if i := strings.IndexAny(text, "\r\n"); i >= 0 {
		text = strings.TrimSpace(text[:i])
	}
	if len(text) > maxFallbackMessage {
		cut := maxFallbackMessage
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	return text
}

// statusText is http.StatusText with a fallback for unknown codes.
func statusText(status int) string {
	if t := http.StatusText(status); t != "" {
		return strings.ToLower(t)
	}
	return fmt.Sprintf("HTTP status %d", status)
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date
// (relative to now). Absent, malformed or past values give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		const maxSecs = int64(1<<63-1) / int64(time.Second)
		if secs > maxSecs {
			secs = maxSecs
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
