package openapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/httpapi"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// validity is what the spec must say of a request: a test sends requests
// the spec forbids on purpose, and the server must refuse those.
type validity int

const (
	valid   validity = iota // the spec allows the request
	invalid                 // the spec forbids it (the server must refuse it)
)

// checker sends requests to a fleet and validates them and their answers
// against the spec the fleet serves.
type checker struct {
	t    *testing.T
	f    *testfleet.Fleet
	v    validator.Validator
	doc  libopenapi.Document
	spec struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				ErrorCodes []string `json:"x-error-codes"`
			} `json:"responses"`
		} `json:"paths"`
	}
	event, gap *base.Schema
	schemas    schema_validation.SchemaValidator
	// seen are the operations ("get /v1/sessions") and outcomes ("get
	// /v1/sessions 200") exercised.
	seen map[string]bool
}

// newChecker reads the spec from the fleet's GET /openapi.json.
func newChecker(t *testing.T, f *testfleet.Fleet) *checker {
	t.Helper()
	r := f.MustDo(0, "GET", "/openapi.json", "", nil)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	c := &checker{t: t, f: f, seen: map[string]bool{}, schemas: schema_validation.NewSchemaValidator()}
	if !bytes.Equal(r.Body, httpapi.OpenAPISpec()) {
		t.Fatalf("GET /openapi.json serves %d bytes, not the %d of httpapi/openapi.json", len(r.Body), len(httpapi.OpenAPISpec()))
	}
	if err := json.Unmarshal(r.Body, &c.spec); err != nil {
		t.Fatalf("spec: %v", err)
	}
	doc, err := libopenapi.NewDocument(r.Body)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("spec model: %v", err)
	}
	// A body sent to an operation that declares none is invalid too.
	v, errs := validator.NewValidator(doc, config.WithRejectUndeclaredRequestBody())
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("the served spec is not a valid OpenAPI document: %s", describe(verrs))
	}
	c.v, c.doc = v, doc
	c.event = model.Model.Components.Schemas.GetOrZero("Event").Schema()
	c.gap = model.Model.Components.Schemas.GetOrZero("EventGap").Schema()
	if c.event == nil || c.gap == nil {
		t.Fatal("the spec has no Event or EventGap schema")
	}
	return c
}

func describe(errs []*liberrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "\n  %s: %s", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n    %s: %s", se.FieldPath, se.Reason)
		}
	}
	return b.String()
}

// call is one request of a test.
type call struct {
	method, path, key string
	body              []byte
	headers           []string // name, value, …
	want              int      // the status the server must answer
	request           validity
	code              string // the error code the server must answer with, if want is an error
}

func jsonCall(method, path, key string, body any, want int) call {
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return call{method: method, path: path, key: key, body: b, headers: []string{"Content-Type", "application/json"}, want: want}
}

func (c call) newRequest(ctx context.Context, base string) (*http.Request, error) {
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, base+c.path, body)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	for i := 0; i+1 < len(c.headers); i += 2 {
		req.Header.Set(c.headers[i], c.headers[i+1])
	}
	return req, nil
}

// operation is the spec's operation a request path falls under.
func (c *checker) operation(method, path string) string {
	path, _, _ = strings.Cut(path, "?")
	segs := strings.Split(path, "/")
next:
	for p := range c.spec.Paths {
		ps := strings.Split(p, "/")
		if len(ps) != len(segs) {
			continue
		}
		for i := range ps {
			if ps[i] != segs[i] && !strings.HasPrefix(ps[i], "{") {
				continue next
			}
		}
		if _, ok := c.spec.Paths[p][strings.ToLower(method)]; ok {
			return strings.ToLower(method) + " " + p
		}
	}
	return ""
}

// do sends a call, validates the request and the response, and checks the
// status and error code. The response is returned with its body read.
func (c *checker) do(cl call) testfleet.Response {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := c.f.URL(0)
	vreq, err := cl.newRequest(ctx, base)
	if err != nil {
		c.t.Fatal(err)
	}
	ok, verrs := c.v.ValidateHttpRequestSync(vreq)
	switch {
	case cl.request == valid && !ok:
		c.t.Errorf("%s %s: the spec refuses a request the test means as valid:%s", cl.method, cl.path, describe(verrs))
	case cl.request == invalid && ok:
		c.t.Errorf("%s %s: the spec allows a request the server refuses with %d", cl.method, cl.path, cl.want)
	}
	req, err := cl.newRequest(ctx, base)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", cl.method, cl.path, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", cl.method, cl.path, err)
	}
	if resp.StatusCode != cl.want {
		c.t.Fatalf("%s %s: %d %s, want %d", cl.method, cl.path, resp.StatusCode, body, cl.want)
	}
	c.checkResponse(cl.method, cl.path, vreq, resp, body)
	return testfleet.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// checkResponse validates a response whose body was read: status, headers
// and body against the operation, and an error's code against the
// response's x-error-codes.
func (c *checker) checkResponse(method, path string, req *http.Request, resp *http.Response, body []byte) {
	c.t.Helper()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if ok, verrs := c.v.ValidateHttpResponse(req, resp); !ok {
		c.t.Errorf("%s %s → %d: the response breaks the spec:%s\nbody: %.300s", method, path, resp.StatusCode, describe(verrs), body)
	}
	op := c.operation(method, path)
	if op == "" {
		c.t.Fatalf("%s %s: no operation of the spec", method, path)
	}
	c.seen[op] = true
	status := fmt.Sprint(resp.StatusCode)
	c.seen[op+" "+status] = true
	if resp.StatusCode < 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return
	}
	var eb apiv1.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		c.t.Fatalf("%s %s: error body %q: %v", method, path, body, err)
	}
	m, p, _ := strings.Cut(op, " ")
	codes := c.spec.Paths[p][m].Responses[status].ErrorCodes
	if !slices.Contains(codes, eb.Error.Code) {
		c.t.Errorf("%s %s → %d %s: the spec lists codes %v for it", method, path, resp.StatusCode, eb.Error.Code, codes)
	}
}

// sse is an open event stream.
type sse struct {
	c      *checker
	cancel context.CancelFunc
	resp   *http.Response
	lines  *bufio.Reader
}

// stream opens an event stream, validates the request and the response's
// status and headers (the body is read event by event).
func (c *checker) stream(cl call) *sse {
	c.t.Helper()
	vreq, err := cl.newRequest(context.Background(), c.f.URL(0))
	if err != nil {
		c.t.Fatal(err)
	}
	if ok, verrs := c.v.ValidateHttpRequestSync(vreq); !ok {
		c.t.Errorf("%s %s: the spec refuses the request:%s", cl.method, cl.path, describe(verrs))
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := cl.newRequest(ctx, c.f.URL(0))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		c.t.Fatalf("%s %s: %v", cl.method, cl.path, err)
	}
	c.t.Cleanup(func() { cancel(); _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("%s %s: %d %s", cl.method, cl.path, resp.StatusCode, b)
	}
	head := *resp
	c.checkResponse(cl.method, cl.path, vreq, &head, nil)
	return &sse{c: c, cancel: cancel, resp: resp, lines: bufio.NewReader(resp.Body)}
}

// next reads events until one of type typ (or the timeout), validating the
// data of each event against the spec's Event (or EventGap) schema.
func (s *sse) next(typ string, timeout time.Duration) map[string]any {
	s.c.t.Helper()
	timer := time.AfterFunc(timeout, s.cancel)
	defer timer.Stop()
	var event, data string
	for {
		line, err := s.lines.ReadString('\n')
		if err != nil {
			s.c.t.Fatalf("event stream ended before a %s event: %v", typ, err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && data != "":
			schema := s.c.event
			if event == "gap" {
				schema = s.c.gap
			}
			if ok, verrs := s.c.schemas.ValidateSchemaString(schema, data); !ok {
				s.c.t.Errorf("event %s breaks the spec:%s\ndata: %s", event, describe(verrs), data)
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				s.c.t.Fatalf("event data %q: %v", data, err)
			}
			if event == typ {
				return v
			}
			event, data = "", ""
		}
	}
}

// coverage fails the test for every operation of the spec no call reached.
func (c *checker) coverage() {
	c.t.Helper()
	var missed, outcomes []string
	for p, ops := range c.spec.Paths {
		for m, op := range ops {
			if !c.seen[m+" "+p] {
				missed = append(missed, m+" "+p)
			}
			for st := range op.Responses {
				if c.seen[m+" "+p+" "+st] {
					outcomes = append(outcomes, m+" "+p+" "+st)
				}
			}
		}
	}
	sort.Strings(missed)
	if len(missed) > 0 {
		c.t.Errorf("operations of the spec no call exercised: %v", missed)
	}
	c.t.Logf("%d operation/status pairs exercised and validated", len(outcomes))
}
