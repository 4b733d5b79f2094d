package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// spec is the parts of openapi.json the tests read, decoded without the
// library under test so that a library quirk cannot hide a drift.
type spec struct {
	Paths      map[string]map[string]specOp `json:"paths"`
	Components struct {
		Schemas map[string]*specSchema `json:"schemas"`
	} `json:"components"`
}

type specOp struct {
	Responses map[string]struct {
		ErrorCodes []string `json:"x-error-codes"`
	} `json:"responses"`
}

type specSchema struct {
	Ref        string                 `json:"$ref"`
	Type       string                 `json:"type"`
	Format     string                 `json:"format"`
	Enum       []any                  `json:"enum"`
	Const      any                    `json:"const"`
	Properties map[string]*specSchema `json:"properties"`
	Required   []string               `json:"required"`
	Items      *specSchema            `json:"items"`
}

func loadSpec(t *testing.T) spec {
	t.Helper()
	var s spec
	if err := json.Unmarshal(openAPISpec, &s); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return s
}

// resolve follows a local $ref.
func (s spec) resolve(t *testing.T, sc *specSchema) *specSchema {
	t.Helper()
	if sc.Ref == "" {
		return sc
	}
	name, ok := strings.CutPrefix(sc.Ref, "#/components/schemas/")
	if !ok || s.Components.Schemas[name] == nil {
		t.Fatalf("$ref %q resolves to nothing", sc.Ref)
	}
	return s.Components.Schemas[name]
}

// TestOpenAPIServed: GET /openapi.json answers the embedded document as
// application/json without credentials.
func TestOpenAPIServed(t *testing.T) {
	a := New(Options{})
	w := httptest.NewRecorder()
	a.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if !slices.Equal(w.Body.Bytes(), openAPISpec) {
		t.Fatal("body is not the embedded openapi.json")
	}
}

// specRoute turns a mux pattern into the spec's method and path.
func specRoute(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	return strings.ToLower(method), strings.TrimSuffix(path, "{$}")
}

// TestOpenAPIRoutes: every route of the router is in the spec and every
// operation of the spec is a route, method for method.
func TestOpenAPIRoutes(t *testing.T) {
	s := loadSpec(t)
	a := New(Options{Gatherer: prometheus.NewRegistry()})
	inCode := map[string]bool{}
	for _, p := range a.Routes() {
		m, path := specRoute(p)
		key := m + " " + path
		if inCode[key] {
			t.Errorf("route %s registered twice", key)
		}
		inCode[key] = true
		if _, ok := s.Paths[path][m]; !ok {
			t.Errorf("route %q is not in openapi.json", p)
		}
	}
	for path, ops := range s.Paths {
		for m := range ops {
			if !inCode[m+" "+path] {
				t.Errorf("openapi.json documents %s %s, which no route serves", strings.ToUpper(m), path)
			}
		}
	}
	if len(inCode) < 25 {
		t.Fatalf("only %d routes: the route table is incomplete", len(inCode))
	}
}

// goSchemas ties the spec's schemas to the Go types whose JSON they are.
var goSchemas = map[string]reflect.Type{
	"Avatar":               reflect.TypeFor[apiv1.Avatar](),
	"AvatarList":           reflect.TypeFor[apiv1.AvatarList](),
	"Voice":                reflect.TypeFor[apiv1.Voice](),
	"VoiceList":            reflect.TypeFor[apiv1.VoiceList](),
	"Session":              reflect.TypeFor[apiv1.Session](),
	"Recording":            reflect.TypeFor[apiv1.Recording](),
	"LiveKitJoin":          reflect.TypeFor[apiv1.LiveKitJoin](),
	"LiveKitState":         reflect.TypeFor[apiv1.LiveKitState](),
	"SessionStats":         reflect.TypeFor[apiv1.SessionStats](),
	"ViewerStats":          reflect.TypeFor[apiv1.ViewerStats](),
	"SessionList":          reflect.TypeFor[apiv1.SessionList](),
	"CreateSessionRequest": reflect.TypeFor[apiv1.CreateSessionRequest](),
	"SpeakRequest":         reflect.TypeFor[apiv1.SpeakRequest](),
	"CreateTokenRequest":   reflect.TypeFor[apiv1.CreateTokenRequest](),
	"Token":                reflect.TypeFor[apiv1.Token](),
	"DrainRequest":         reflect.TypeFor[apiv1.DrainRequest](),
	"GPU":                  reflect.TypeFor[apiv1.GPU](),
	"Capacity":             reflect.TypeFor[apiv1.Capacity](),
	"BatchTiming":          reflect.TypeFor[apiv1.BatchTiming](),
	"Worker":               reflect.TypeFor[apiv1.Worker](),
	"WorkerList":           reflect.TypeFor[apiv1.WorkerList](),
	"Event":                reflect.TypeFor[apiv1.Event](),
	"ErrorBody":            reflect.TypeFor[apiv1.ErrorBody](),
	"ErrorDetail":          reflect.TypeFor[apiv1.ErrorDetail](),
	"EventGap":             reflect.TypeFor[gapEvent](),
}

// mapSchemas are the schemas of no Go struct: SessionState is a string
// enum (TestOpenAPIEnums), the others bodies the handlers write as
// map[string]string, checked where they are produced (TestOpenAPIProbes
// here, Queued by e2e/openapi against a running control plane).
var mapSchemas = []string{"Queued", "Health", "Readiness", "SessionState"}

// TestOpenAPISchemasMatchGoTypes: each schema tied to a Go type has
// exactly the struct's JSON fields, requires exactly those without
// omitempty (the server always writes them; a client must send them), and
// gives each the JSON type of its Go type.
func TestOpenAPISchemasMatchGoTypes(t *testing.T) {
	s := loadSpec(t)
	for name := range s.Components.Schemas {
		if goSchemas[name] == nil && !slices.Contains(mapSchemas, name) {
			t.Errorf("schema %s is tied to no Go type: add it to goSchemas or mapSchemas", name)
		}
	}
	for name, typ := range goSchemas {
		t.Run(name, func(t *testing.T) {
			sc := s.Components.Schemas[name]
			if sc == nil {
				t.Fatalf("no schema %s for %s", name, typ)
			}
			if sc.Type != "object" {
				t.Fatalf("type %q, want object", sc.Type)
			}
			fields := map[string]reflect.StructField{}
			var required []string
			for i := range typ.NumField() {
				f := typ.Field(i)
				tag := f.Tag.Get("json")
				jname, opts, _ := strings.Cut(tag, ",")
				if !f.IsExported() || jname == "-" {
					continue
				}
				if jname == "" {
					jname = f.Name
				}
				fields[jname] = f
				if !strings.Contains(opts, "omitempty") {
					required = append(required, jname)
				}
			}
			for p := range sc.Properties {
				if _, ok := fields[p]; !ok {
					t.Errorf("property %q is no field of %s", p, typ)
				}
			}
			for j, f := range fields {
				prop := sc.Properties[j]
				if prop == nil {
					t.Errorf("field %s.%s (%q) is not in the schema", typ, f.Name, j)
					continue
				}
				if want, got := jsonType(f.Type), s.resolve(t, prop).Type; want != got {
					t.Errorf("property %q: type %q, want %q (Go %s)", j, got, want, f.Type)
				}
				if isTime(f.Type) && prop.Format != "date-time" {
					t.Errorf("property %q: format %q, want date-time", j, prop.Format)
				}
			}
			sort.Strings(required)
			got := slices.Sorted(slices.Values(sc.Required))
			if !slices.Equal(got, required) {
				t.Errorf("required %v, want the fields without omitempty %v", got, required)
			}
		})
	}
}

func isTime(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t == reflect.TypeFor[time.Time]()
}

// jsonType is the JSON Schema type encoding/json gives a Go type.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[time.Time]() {
		return "string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return "unsupported " + t.Kind().String()
}

// apiv1Consts reads the string constants of package apiv1 by name.
func apiv1Consts(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../apiv1/types.go", nil, 0)
	if err != nil {
		t.Fatalf("parse apiv1: %v", err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatalf("constant %s: %v", n.Name, err)
					}
					out[n.Name] = v
				}
			}
		}
	}
	return out
}

// TestOpenAPIEnums: the spec's enums are apiv1's constants, no more, no
// fewer (an error code, state or reason added in Go must be documented).
func TestOpenAPIEnums(t *testing.T) {
	s := loadSpec(t)
	consts := apiv1Consts(t)
	prop := func(schema, p string) *specSchema {
		sc := s.Components.Schemas[schema]
		if sc == nil || sc.Properties[p] == nil {
			t.Fatalf("no property %s.%s", schema, p)
		}
		return s.resolve(t, sc.Properties[p])
	}
	tests := []struct {
		name   string
		enum   *specSchema
		prefix string
		skip   []string
	}{
		{"error codes", prop("ErrorDetail", "code"), "Code", nil},
		{"session states", s.Components.Schemas["SessionState"], "State", nil},
		{"end reasons", prop("Session", "end_reason"), "Reason", nil},
		{"restart policies", prop("Session", "restart_policy"), "Restart", nil},
		{"create restart policies", prop("CreateSessionRequest", "restart_policy"), "Restart", nil},
		{"move reasons", prop("Session", "move_reason"), "Move", nil},
		{"livekit states", prop("LiveKitState", "state"), "LiveKit", nil},
		{"event move reasons", prop("Event", "reason"), "Move", nil},
		{"worker states", prop("Worker", "state"), "Worker", nil},
		{"token grants", prop("Token", "grants").Items, "Grant", nil},
		{"requested grants", prop("CreateTokenRequest", "grants").Items, "Grant", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []string
			for n, v := range consts {
				if strings.HasPrefix(n, tt.prefix) {
					want = append(want, v)
				}
			}
			var got []string
			for _, v := range tt.enum.Enum {
				got = append(got, v.(string))
			}
			sort.Strings(want)
			sort.Strings(got)
			if len(want) == 0 || !slices.Equal(got, want) {
				t.Fatalf("enum %v, want apiv1's %s* constants %v", got, tt.prefix, want)
			}
		})
	}
}

// TestOpenAPIProbes: the probes' bodies have exactly their schema's fields.
func TestOpenAPIProbes(t *testing.T) {
	s := loadSpec(t)
	tests := []struct {
		name   string
		path   string
		ready  func(context.Context) error
		status int
		schema string
	}{
		{"healthz", "/healthz", nil, http.StatusOK, "Health"},
		{"ready", "/readyz", func(context.Context) error { return nil }, http.StatusOK, "Readiness"},
		{"not ready", "/readyz", func(context.Context) error { return errors.New("etcd: no leader") }, http.StatusServiceUnavailable, "Readiness"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			New(Options{Ready: tt.ready}).ServeHTTP(w, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			var body map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			sc := s.Components.Schemas[tt.schema]
			for k := range body {
				if sc.Properties[k] == nil {
					t.Errorf("field %q is not in schema %s", k, tt.schema)
				}
			}
			for _, k := range sc.Required {
				if _, ok := body[k]; !ok {
					t.Errorf("required field %q missing from %s", k, w.Body)
				}
			}
			st := sc.Properties["status"]
			if ok := slices.Contains(st.Enum, body["status"]) || st.Const == body["status"]; !ok {
				t.Errorf("status %v: want one of %v or %v", body["status"], st.Enum, st.Const)
			}
		})
	}
}
