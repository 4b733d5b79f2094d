package tts

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// ErrUnknownEngine: no engine of that name is registered.
const ErrUnknownEngine ErrorKind = "tts: unknown engine"

// EngineOptions are what a program's configuration says about its engine,
// whichever it is; each engine takes the fields it understands and refuses
// the ones it does not (Check).
type EngineOptions struct {
	// URL is the base URL of an engine that is a server.
	URL string
	// Model is the model a server engine is asked for ("" for its default).
	Model string
	// Voice is the engine's default voice ("" for its own default).
	Voice string
	// APIKey authenticates to a server engine; it never appears in errors.
	APIKey string
}

// EngineSpec is one engine of a Registry.
type EngineSpec struct {
	// Name selects the engine: ^[a-z][a-z0-9-]{0,31}$.
	Name string
	// Summary says what the engine is, in a few words (for help texts).
	Summary string
	// Check validates the options without side effects (no process, no
	// request), so a configuration can be refused before anything starts.
	// nil accepts any options. The voice is checked by the Registry.
	Check func(opts EngineOptions) error
	// New makes the engine (required); its options have passed Check.
	New func(ctx context.Context, opts EngineOptions) (Engine, error)
}

// Registry maps engine names to their constructors, so that a program
// selects an engine by name and adding one does not touch the program's
// configuration parsing. A Registry is built once and then only read: its
// methods are safe for concurrent use.
type Registry struct {
	specs map[string]EngineSpec
	names []string // sorted
}

// NewRegistry registers specs; a malformed or repeated name, or a spec
// without New, is an error.
func NewRegistry(specs ...EngineSpec) (*Registry, error) {
	r := &Registry{specs: make(map[string]EngineSpec, len(specs))}
	for _, s := range specs {
		if !validEngineName(s.Name) {
			return nil, fmt.Errorf("%w: engine name %q: want ^[a-z][a-z0-9-]{0,31}$", ErrConfig, s.Name)
		}
		if _, dup := r.specs[s.Name]; dup {
			return nil, fmt.Errorf("%w: engine %q registered twice", ErrConfig, s.Name)
		}
		if s.New == nil {
			return nil, fmt.Errorf("%w: engine %q has no constructor", ErrConfig, s.Name)
		}
		r.specs[s.Name] = s
		r.names = append(r.names, s.Name)
	}
	slices.Sort(r.names)
	return r, nil
}

func validEngineName(s string) bool {
	if s == "" || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Names are the registered engines, sorted.
func (r *Registry) Names() []string { return slices.Clone(r.names) }

// Describe is "name (summary), name (summary)" in Names' order.
func (r *Registry) Describe() string {
	parts := make([]string, len(r.names))
	for i, n := range r.names {
		parts[i] = n
		if s := r.specs[n].Summary; s != "" {
			parts[i] += " (" + s + ")"
		}
	}
	return strings.Join(parts, ", ")
}

// Check validates opts for the engine name, without making it: an
// unknown name gives ErrUnknownEngine listing the registered ones.
func (r *Registry) Check(name string, opts EngineOptions) error {
	s, ok := r.specs[name]
	if !ok {
		return fmt.Errorf("%w %q; registered: %s", ErrUnknownEngine, truncate(name, 32), strings.Join(r.names, ", "))
	}
	if opts.Voice != "" {
		if err := CheckVoice(opts.Voice); err != nil {
			return err
		}
	}
	if s.Check != nil {
		if err := s.Check(opts); err != nil {
			return fmt.Errorf("engine %s: %w", name, err)
		}
	}
	return nil
}

// New checks opts and makes the engine name.
func (r *Registry) New(ctx context.Context, name string, opts EngineOptions) (Engine, error) {
	if err := r.Check(name, opts); err != nil {
		return nil, err
	}
	e, err := r.specs[name].New(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("engine %s: %w", name, err)
	}
	return e, nil
}

// Names of the built-in engines.
const (
	EngineEspeak = "espeak"
	EngineHTTP   = "http"
)

// Builtin is a Registry of the engines of this package: espeak (NewEspeak)
// and http (NewHTTP). A program that adds its own passes them to
// NewRegistry with BuiltinSpecs.
func Builtin() *Registry {
	r, err := NewRegistry(BuiltinSpecs()...)
	if err != nil {
		panic(err) // the built-in specs are fixed: covered by the tests
	}
	return r
}

// BuiltinSpecs are the specs of Builtin's engines.
func BuiltinSpecs() []EngineSpec {
	return []EngineSpec{
		{
			Name:    EngineEspeak,
			Summary: "local espeak-ng",
			Check: func(o EngineOptions) error {
				if o.URL != "" || o.Model != "" {
					return fmt.Errorf("%w: espeak takes no URL or model (those are for a server engine such as http)", ErrConfig)
				}
				return nil
			},
			New: func(ctx context.Context, o EngineOptions) (Engine, error) {
				return NewEspeak(ctx, EspeakOptions{DefaultVoice: o.Voice})
			},
		},
		{
			Name:    EngineHTTP,
			Summary: "OpenAI-compatible /v1/audio/speech",
			Check: func(o EngineOptions) error {
				if o.URL == "" {
					return fmt.Errorf("%w: http needs a URL, http(s)://host[:port]", ErrConfig)
				}
				_, err := newHTTPOf(o) // makes no request
				return err
			},
			New: func(_ context.Context, o EngineOptions) (Engine, error) { return newHTTPOf(o) },
		},
	}
}

func newHTTPOf(o EngineOptions) (*HTTP, error) {
	return NewHTTP(HTTPOptions{BaseURL: o.URL, Model: o.Model, Voice: o.Voice, APIKey: o.APIKey})
}
