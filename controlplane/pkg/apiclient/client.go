package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Limits on how much of a response body the client reads.
const (
	// maxResponseBytes bounds a successful JSON body (a long session list).
	maxResponseBytes = 32 << 20
	// maxErrorBytes bounds an error body; the rest is discarded.
	maxErrorBytes = 64 << 10
	// maxDiscardBytes is how much of an unread body is drained so that the
	// connection can be reused.
	maxDiscardBytes = 64 << 10
)

// Options configures a Client.
type Options struct {
	// BaseURL is the control plane's root, e.g. "http://127.0.0.1:8080".
	// A path prefix (behind a proxy) is kept: "https://h/avatarfleet".
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <APIKey>" when not empty.
	APIKey string
	// HTTPClient sends the requests; nil means a new http.Client with no
	// overall timeout (bound calls with their context instead: a client
	// Timeout would also cut the Events stream).
	HTTPClient *http.Client
}

// Client calls the REST API. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	apiKey string
	hc     *http.Client
}

// New returns a Client for opts, or an error if BaseURL is not an absolute
// http or https URL.
func New(opts Options) (*Client, error) {
	if opts.BaseURL == "" {
		return nil, errors.New("apiclient: empty base URL")
	}
	u, err := url.Parse(opts.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("apiclient: parse base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("apiclient: base URL %q: scheme must be http or https", opts.BaseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("apiclient: base URL %q has no host", opts.BaseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("apiclient: base URL %q must not have a query or fragment", opts.BaseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: u, apiKey: opts.APIKey, hc: hc}, nil
}

// BaseURL returns the base URL the client was built with (normalised).
func (c *Client) BaseURL() string { return c.base.String() }

// call describes one request/response exchange.
type call struct {
	method      string
	path        string // escaped path below the base URL, e.g. "/v1/sessions/abc"
	body        io.Reader
	contentType string
	header      http.Header
	// out receives the decoded JSON body of a 2xx response when not nil.
	out any
	// optionalBody tolerates an empty 2xx body when out is set; the
	// return value then reports whether out was filled.
	optionalBody bool
}

// newRequest builds the HTTP request of cl.
func (c *Client) newRequest(ctx context.Context, cl call) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, cl.method, c.base.String()+cl.path, cl.body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, vs := range cl.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if cl.contentType != "" {
		req.Header.Set("Content-Type", cl.contentType)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	return req, nil
}

// do sends cl. A non-2xx response becomes an *APIError. It reports whether
// cl.out was filled.
func (c *Client) do(ctx context.Context, cl call) (bool, error) {
	req, err := c.newRequest(ctx, cl)
	if err != nil {
		return false, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return false, err
	}
	defer closeBody(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return false, errorFromResponse(resp)
	}
	if cl.out == nil {
		return false, nil
	}
	data, err := readLimited(resp.Body, maxResponseBytes)
	if err != nil {
		return false, fmt.Errorf("read response (HTTP %d): %w", resp.StatusCode, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if cl.optionalBody {
			return false, nil
		}
		return false, fmt.Errorf("empty response body (HTTP %d)", resp.StatusCode)
	}
	if err := json.Unmarshal(data, cl.out); err != nil {
		return false, fmt.Errorf("decode response (HTTP %d): %w", resp.StatusCode, err)
	}
	return true, nil
}

// jsonBody encodes v as a request body.
func jsonBody(v any) (io.Reader, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return bytes.NewReader(b), nil
}

// readLimited reads r to its end, failing when it holds more than limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("response body exceeds %d bytes", limit)
	}
	return data, nil
}

// closeBody drains a bounded rest of body, so the connection can be
// reused, and closes it.
func closeBody(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDiscardBytes))
	_ = body.Close()
}

// pathID escapes one path segment, refusing an empty one (which would
// address the collection instead of the resource).
func pathID(kind, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("empty %s id", kind)
	}
	return url.PathEscape(id), nil
}
