package httpapi

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// outcome is a status a route answers with and, for an error, its code.
type outcome struct {
	status int
	code   string
}

func (o outcome) String() string {
	if o.code == "" {
		return fmt.Sprint(o.status)
	}
	return fmt.Sprintf("%d %s", o.status, o.code)
}

// routeOutcomes is, for each route, where its answers come from:
//   - funcs: the functions that serve it (the wrapper that registered it
//     and the handler). The test reads their source, and that of every
//     function of this package they call, for the statuses they write and
//     the API errors they build (errorf, apiError literals, writeJSON,
//     WriteHeader, http.NotFound/Error, an implicit 200 from w.Write);
//   - errs: the errors of other packages (the session manager, the store,
//     the request context, the body deadline) it passes up; the test maps
//     them with mapSignalingError / mapError as the route does;
//   - never: outcomes the source builds on a path the route cannot take,
//     each with the reason;
//   - extra: what code outside this package answers (promhttp).
//
// The route's documented responses must be exactly these outcomes.
type routeOutcomes struct {
	funcs     []string
	errs      []error
	signaling bool
	never     []outcome
	extra     []outcome
}

var (
	storeErrs = []error{sessions.ErrUnavailable, context.DeadlineExceeded}
	// readyErrs are what the session manager's calls to a ready session's
	// worker return (grpcError).
	readyErrs = []error{sessions.ErrNotFound, sessions.ErrNotReady, sessions.ErrInvalidInput, sessions.ErrUnavailable, context.DeadlineExceeded}
	// offerErrs are what WHEP/WHIP offers pass up (signalingError).
	offerErrs = []error{errBodyTimeout, sessions.ErrInvalidSDP, sessions.ErrTooManyPending, sessions.ErrRoomFull, sessions.ErrNoMedia,
		sessions.ErrNotFound, sessions.ErrUnavailable, context.DeadlineExceeded}
	hangUpErrs = []error{sessions.ErrNoMedia, sessions.ErrNotFound, sessions.ErrUnavailable, context.DeadlineExceeded}
	// hangUpNever: hangUp answers a session not started yet (liveSession's
	// 409) with 404.
	hangUpNever = []outcome{{http.StatusConflict, "session_not_ready"}}
)

var routeTable = map[string]routeOutcomes{
	"POST /v1/sessions": {funcs: []string{"handle", "createSession"}, errs: []error{errBodyTimeout, sessions.ErrNoCapacity,
		sessions.ErrQuotaExceeded, sessions.ErrUnknownAvatar, sessions.ErrUnknownVoice, sessions.ErrIdempotencyConflict,
		sessions.ErrUnavailable, context.DeadlineExceeded}},
	"GET /v1/sessions":                          {funcs: []string{"handle", "listSessions"}, errs: storeErrs},
	"GET /v1/sessions/{id}":                     {funcs: []string{"handle", "getSession"}, errs: append([]error{sessions.ErrNotFound}, storeErrs...)},
	"DELETE /v1/sessions/{id}":                  {funcs: []string{"handle", "deleteSession"}, errs: append([]error{sessions.ErrNotFound}, storeErrs...)},
	"POST /v1/sessions/{id}/speak":              {funcs: []string{"handle", "speak"}, errs: append([]error{errBodyTimeout, sessions.ErrSpeechQueueFull}, readyErrs...)},
	"POST /v1/sessions/{id}/audio":              {funcs: []string{"handleBody", "pushAudio"}, errs: []error{errBodyTimeout, sessions.ErrNotFound, sessions.ErrNotReady, sessions.ErrUnavailable, context.DeadlineExceeded}},
	"POST /v1/sessions/{id}/interrupt":          {funcs: []string{"handle", "interrupt"}, errs: readyErrs},
	"POST /v1/sessions/{id}/recordings":         {funcs: []string{"handle", "startRecording"}, errs: readyErrs},
	"GET /v1/sessions/{id}/recordings/{rid}":    {funcs: []string{"handleBody", "fetchRecording"}, errs: readyErrs},
	"DELETE /v1/sessions/{id}/recordings/{rid}": {funcs: []string{"handle", "stopRecording"}, errs: readyErrs},
	"POST /v1/sessions/{id}/tokens":             {funcs: []string{"handle", "createToken"}, errs: append([]error{errBodyTimeout, sessions.ErrNotFound}, storeErrs...)},
	"GET /v1/avatars":                           {funcs: []string{"handle", "listAvatars"}},
	"GET /v1/avatars/{name}/preview":            {funcs: []string{"handle", "avatarPreview"}},
	"GET /v1/voices":                            {funcs: []string{"handle", "listVoices"}},
	"GET /v1/workers":                           {funcs: []string{"handle", "listWorkers"}},
	"GET /v1/workers/{id}":                      {funcs: []string{"handle", "getWorker"}},
	"POST /v1/workers/{id}/drain":               {funcs: []string{"handle", "drainWorker"}, errs: []error{errBodyTimeout, fleetstore.ErrNotFound, context.DeadlineExceeded}},
	"POST /v1/workers/{id}/undrain":             {funcs: []string{"handle", "undrainWorker"}, errs: []error{fleetstore.ErrNotFound, context.DeadlineExceeded}},
	"POST /v1/sessions/{id}/whep":               {funcs: []string{"signal", "offer"}, errs: offerErrs, signaling: true},
	"DELETE /v1/sessions/{id}/whep/{peer}":      {funcs: []string{"signal", "hangUp"}, errs: hangUpErrs, signaling: true, never: hangUpNever},
	"PATCH /v1/sessions/{id}/whep/{peer}":       {funcs: []string{"signal"}, signaling: true, extra: []outcome{{http.StatusMethodNotAllowed, "method_not_allowed"}}},
	"OPTIONS /v1/sessions/{id}/whep":            {funcs: []string{"instrument"}, extra: []outcome{{http.StatusNoContent, ""}}},
	"POST /v1/sessions/{id}/whip":               {funcs: []string{"signal", "offer"}, errs: offerErrs, signaling: true},
	"DELETE /v1/sessions/{id}/whip/{peer}":      {funcs: []string{"signal", "hangUp"}, errs: hangUpErrs, signaling: true, never: hangUpNever},
	"PATCH /v1/sessions/{id}/whip/{peer}":       {funcs: []string{"signal"}, signaling: true, extra: []outcome{{http.StatusMethodNotAllowed, "method_not_allowed"}}},
	"OPTIONS /v1/sessions/{id}/whip":            {funcs: []string{"instrument"}, extra: []outcome{{http.StatusNoContent, ""}}},
	"GET /v1/events":                            {funcs: []string{"instrument", "authenticated", "events"}},
	"GET /v1/sessions/{id}/events":              {funcs: []string{"instrument", "sessionEventsHandler", "sessionEvents"}},
	"GET /healthz":                              {extra: []outcome{{http.StatusOK, ""}}},
	"GET /readyz":                               {funcs: []string{"readyz"}},
	"GET /metrics":                              {extra: []outcome{{http.StatusOK, ""}, {http.StatusInternalServerError, ""}}},
	"GET /openapi.json":                         {funcs: []string{"serveOpenAPI"}},
	"GET /{$}":                                  {funcs: []string{"index"}, never: []outcome{{http.StatusNotFound, ""}}},
	"GET /demo/{file}":                          {funcs: []string{"demoAsset"}},
	"GET /avatarfleet.js":                       {funcs: []string{"client"}, never: []outcome{{http.StatusNotFound, ""}}},
}

// Wrappers of the PATCH and OPTIONS routes are closures in
// signalingRoutes; their answers are listed as extra. The demo files are
// embedded: serveDemoFile's 404 happens only for a name demoAsset refuses
// first (index and client name files that exist).

// translators are the functions that map other packages' errors: the test
// applies them to each route's errs instead of reading them.
var translators = []string{"mapError", "mapSignalingError"}

// notFollowed are functions the walk reads the calls of instead: errorf
// builds the error its caller names, and API.ServeHTTP is the router,
// whose 404 and 405 answer requests that match no route (the spec says so
// once, in info.description); the wrappers' next.ServeHTTP is the route's
// own handler, listed in funcs.
var notFollowed = []string{"errorf", "ServeHTTP"}

// statuses names the net/http constants the handlers use.
var statuses = map[string]int{
	"StatusOK": http.StatusOK, "StatusCreated": http.StatusCreated, "StatusAccepted": http.StatusAccepted,
	"StatusNoContent": http.StatusNoContent, "StatusBadRequest": http.StatusBadRequest,
	"StatusUnauthorized": http.StatusUnauthorized, "StatusForbidden": http.StatusForbidden,
	"StatusNotFound": http.StatusNotFound, "StatusMethodNotAllowed": http.StatusMethodNotAllowed,
	"StatusRequestTimeout": http.StatusRequestTimeout, "StatusConflict": http.StatusConflict,
	"StatusRequestEntityTooLarge": http.StatusRequestEntityTooLarge, "StatusUnsupportedMediaType": http.StatusUnsupportedMediaType,
	"StatusTooManyRequests": http.StatusTooManyRequests, "StatusInternalServerError": http.StatusInternalServerError,
	"StatusServiceUnavailable": http.StatusServiceUnavailable, "StatusNotModified": http.StatusNotModified,
}

// source is this package's functions by name, read from its files.
type source struct {
	t      *testing.T
	funcs  map[string][]*ast.FuncDecl
	consts map[string]string // apiv1's
}

func readSource(t *testing.T) *source {
	t.Helper()
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	s := &source{t: t, funcs: map[string][]*ast.FuncDecl{}, consts: apiv1Consts(t)}
	fset := token.NewFileSet()
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", e.Name(), err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				s.funcs[fd.Name.Name] = append(s.funcs[fd.Name.Name], fd)
			}
		}
	}
	return s
}

// status evaluates http.StatusX.
func (s *source) status(e ast.Expr) (int, bool) {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return 0, false
	}
	if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "http" {
		return 0, false
	}
	st, ok := statuses[sel.Sel.Name]
	if !ok {
		s.t.Fatalf("http.%s: add it to statuses", sel.Sel.Name)
	}
	return st, true
}

// code evaluates apiv1.CodeX.
func (s *source) code(e ast.Expr) (string, bool) {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return "", false
	}
	if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "apiv1" {
		return "", false
	}
	c, ok := s.consts[sel.Sel.Name]
	return c, ok
}

// outcomes walks the named functions and every function of this package
// they call (not the translators) and returns what they answer.
func (s *source) outcomes(names []string) map[outcome]bool {
	out := map[outcome]bool{}
	seen := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		if seen[name] || slices.Contains(notFollowed, name) || slices.Contains(translators, name) {
			return
		}
		seen[name] = true
		for _, fd := range s.funcs[name] {
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CompositeLit:
					if id, ok := n.Type.(*ast.Ident); ok && id.Name == "apiError" {
						var o outcome
						for _, el := range n.Elts {
							kv := el.(*ast.KeyValueExpr)
							switch kv.Key.(*ast.Ident).Name {
							case "status":
								o.status, _ = s.status(kv.Value)
							case "code":
								o.code, _ = s.code(kv.Value)
							}
						}
						if o.status == 0 || o.code == "" {
							s.t.Fatalf("%s: an apiError literal without a constant status and code", name)
						}
						out[o] = true
					}
				case *ast.CallExpr:
					s.call(name, n, out, visit)
				}
				return true
			})
		}
	}
	for _, n := range names {
		if len(s.funcs[n]) == 0 {
			s.t.Fatalf("no function %s in the package", n)
		}
		visit(n)
	}
	return out
}

func (s *source) call(in string, c *ast.CallExpr, out map[outcome]bool, visit func(string)) {
	var name, recv string
	switch f := c.Fun.(type) {
	case *ast.Ident:
		name = f.Name
	case *ast.SelectorExpr:
		name = f.Sel.Name
		if x, ok := f.X.(*ast.Ident); ok {
			recv = x.Name
		}
	default:
		return
	}
	arg := func(i int) ast.Expr {
		if i < len(c.Args) {
			return c.Args[i]
		}
		return nil
	}
	switch {
	case name == "errorf" && recv == "":
		st, ok1 := s.status(arg(0))
		code, ok2 := s.code(arg(1))
		if !ok1 || !ok2 {
			s.t.Fatalf("%s: errorf without a constant status and code", in)
		}
		out[outcome{st, code}] = true
	case name == "writeJSON" && recv == "":
		if st, ok := s.status(arg(1)); ok {
			out[outcome{st, ""}] = true
		}
	case name == "WriteHeader":
		if st, ok := s.status(arg(0)); ok {
			out[outcome{st, ""}] = true
		}
	case recv == "http" && name == "NotFound":
		out[outcome{http.StatusNotFound, ""}] = true
	case recv == "http" && name == "Error":
		if st, ok := s.status(arg(2)); ok {
			out[outcome{st, ""}] = true
		}
	case recv == "w" && name == "Write":
		out[outcome{http.StatusOK, ""}] = true // implicit
	}
	if recv != "http" && len(s.funcs[name]) > 0 {
		visit(name)
	}
}

// TestOpenAPIStatusCodes: each route documents exactly the statuses, and
// for errors the codes (x-error-codes), that its code can answer with.
func TestOpenAPIStatusCodes(t *testing.T) {
	sp := loadSpec(t)
	src := readSource(t)
	a := New(Options{Gatherer: nil})
	routes := append(a.Routes(), "GET /metrics") // registered with a Gatherer only
	for _, pattern := range routes {
		t.Run(pattern, func(t *testing.T) {
			src.t = t
			rt, ok := routeTable[pattern]
			if !ok {
				t.Fatalf("route %s is not in routeTable: say where its answers come from", pattern)
			}
			produced := src.outcomes(rt.funcs)
			for _, e := range rt.errs {
				mapped := e
				if rt.signaling {
					mapped = mapSignalingError(mapped)
				}
				var ae *apiError
				if !errors.As(mapError(mapped), &ae) {
					t.Fatalf("%v maps to no API error", e)
				}
				produced[outcome{ae.status, ae.code}] = true
			}
			for _, o := range rt.extra {
				produced[o] = true
			}
			for _, o := range rt.never {
				if !produced[o] {
					t.Errorf("never lists %v, which the source does not build: drop it", o)
				}
				delete(produced, o)
			}
			m, path := specRoute(pattern)
			op, ok := sp.Paths[path][m]
			if !ok {
				t.Fatalf("not in the spec")
			}
			documented := map[outcome]bool{}
			for st, r := range op.Responses {
				var n int
				if _, err := fmt.Sscan(st, &n); err != nil {
					t.Fatalf("response %q: want a status code", st)
				}
				if len(r.ErrorCodes) == 0 {
					documented[outcome{n, ""}] = true
				}
				for _, c := range r.ErrorCodes {
					documented[outcome{n, c}] = true
				}
			}
			var missing, extra []string
			for o := range produced {
				if !documented[o] {
					missing = append(missing, o.String())
				}
			}
			for o := range documented {
				if !produced[o] {
					extra = append(extra, o.String())
				}
			}
			sort.Strings(missing)
			sort.Strings(extra)
			if len(missing) > 0 {
				t.Errorf("answers %v, which the spec does not document", missing)
			}
			if len(extra) > 0 {
				t.Errorf("the spec documents %v, which the route cannot answer", extra)
			}
		})
	}
	for pattern := range routeTable {
		if !slices.Contains(routes, pattern) {
			t.Errorf("routeTable lists %s, which is no route", pattern)
		}
	}
}

// TestRoutesRegisteredThroughTheTable: every route goes through register,
// so Routes (and with it TestOpenAPIRoutes) sees it: no other function of
// the package adds a handler to the mux itself.
func TestRoutesRegisteredThroughTheTable(t *testing.T) {
	src := readSource(t)
	for name, fds := range src.funcs {
		for _, fd := range fds {
			ast.Inspect(fd, func(n ast.Node) bool {
				c, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := c.Fun.(*ast.SelectorExpr)
				if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
					return true
				}
				if x, ok := sel.X.(*ast.SelectorExpr); ok && x.Sel.Name == "mux" && name != "register" {
					t.Errorf("%s adds a handler to the mux directly: use register, so the route table holds it", name)
				}
				return true
			})
		}
	}
}
