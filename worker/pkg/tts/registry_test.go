package tts

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// fakeEngine is a test double of Engine for the registry's tests.
type fakeEngine struct{ opts EngineOptions }

func (f *fakeEngine) Synthesize(context.Context, string, string) (Audio, error) { return Audio{}, nil }
func (f *fakeEngine) Voices() []string                                          { return []string{f.opts.Voice} }

func fakeSpec(name string) EngineSpec {
	return EngineSpec{Name: name, Summary: "a test double", New: func(_ context.Context, o EngineOptions) (Engine, error) {
		return &fakeEngine{opts: o}, nil
	}}
}

func TestNewRegistry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []EngineSpec
		want  string // "" for no error
	}{
		{"none", nil, ""},
		{"two", []EngineSpec{fakeSpec("b"), fakeSpec("a-2")}, ""},
		{"twice", []EngineSpec{fakeSpec("a"), fakeSpec("a")}, `engine "a" registered twice`},
		{"empty name", []EngineSpec{fakeSpec("")}, `engine name ""`},
		{"upper case", []EngineSpec{fakeSpec("Espeak")}, `engine name "Espeak"`},
		{"digit first", []EngineSpec{fakeSpec("9x")}, `engine name "9x"`},
		{"too long", []EngineSpec{fakeSpec(strings.Repeat("a", 33))}, "want ^[a-z]"},
		{"no constructor", []EngineSpec{{Name: "x"}}, `engine "x" has no constructor`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRegistry(tc.specs...)
			if tc.want != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("NewRegistry = %v, want ErrConfig with %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, s := range tc.specs {
				want = append(want, s.Name)
			}
			slices.Sort(want)
			if got := r.Names(); !slices.Equal(got, want) {
				t.Fatalf("Names = %v, want %v", got, want)
			}
		})
	}
}

// TestBuiltinCheck: the built-in engines' options are checked as the
// worker's flags were: a URL only for http (and a valid one there), a
// well-formed voice, and an unknown name lists the registered ones.
func TestBuiltinCheck(t *testing.T) {
	r := Builtin()
	if got := r.Names(); !slices.Equal(got, []string{"espeak", "http"}) {
		t.Fatalf("Names = %v", got)
	}
	if got := r.Describe(); got != "espeak (local espeak-ng), http (OpenAI-compatible /v1/audio/speech)" {
		t.Fatalf("Describe = %q", got)
	}
	for _, tc := range []struct {
		name   string
		engine string
		opts   EngineOptions
		is     error // nil for no error
		want   string
	}{
		{"espeak", "espeak", EngineOptions{}, nil, ""},
		{"espeak voice", "espeak", EngineOptions{Voice: "en-gb"}, nil, ""},
		{"espeak url", "espeak", EngineOptions{URL: "http://x"}, ErrConfig, "engine espeak: tts: invalid options: espeak takes no URL or model"},
		{"espeak model", "espeak", EngineOptions{Model: "m"}, ErrConfig, "no URL or model"},
		{"http", "http", EngineOptions{URL: "https://tts.example:8443", Model: "m1", Voice: "alloy", APIKey: "sk-1"}, nil, ""},
		{"http no url", "http", EngineOptions{}, ErrConfig, "http needs a URL"},
		{"http ftp", "http", EngineOptions{URL: "ftp://x"}, ErrConfig, `BaseURL "ftp://x"`},
		{"http query", "http", EngineOptions{URL: "http://x/?a=b"}, ErrConfig, "no query"},
		{"bad voice", "http", EngineOptions{URL: "http://x", Voice: "a voice"}, ErrInvalidVoice, `"a voice"`},
		{"unknown", "festival", EngineOptions{}, ErrUnknownEngine, `tts: unknown engine "festival"; registered: espeak, http`},
		{"unknown long", strings.Repeat("x", 100), EngineOptions{}, ErrUnknownEngine, "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Check(tc.engine, tc.opts)
			if tc.is == nil {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %v with %q", err, tc.is, tc.want)
			}
			if strings.Contains(err.Error(), "sk-1") {
				t.Fatalf("the API key leaked into %v", err)
			}
		})
	}
}

// TestRegistryNew: New makes the named engine with its options, refuses
// what Check refuses without calling the constructor, and wraps the
// constructor's errors with the engine's name.
func TestRegistryNew(t *testing.T) {
	broken := errors.New("no such program")
	calls := 0
	r, err := NewRegistry(append(BuiltinSpecs(),
		fakeSpec("fake"),
		EngineSpec{Name: "picky", Check: func(o EngineOptions) error {
			if o.Model == "" {
				return ErrConfig
			}
			return nil
		}, New: func(context.Context, EngineOptions) (Engine, error) { calls++; return nil, broken }},
	)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e, err := r.New(ctx, "fake", EngineOptions{Voice: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := e.(*fakeEngine); !ok || f.opts.Voice != "v1" {
		t.Fatalf("New = %#v, want the fake engine with voice v1", e)
	}
	h, err := r.New(ctx, "http", EngineOptions{URL: "http://127.0.0.1:1", Voice: "alloy"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.(*HTTP); !ok || !slices.Equal(h.Voices(), []string{"alloy"}) {
		t.Fatalf("New(http) = %#v, voices %v", h, h.Voices())
	}
	if _, err := r.New(ctx, "picky", EngineOptions{}); !errors.Is(err, ErrConfig) || calls != 0 {
		t.Fatalf("New with options Check refuses = %v after %d constructor calls, want ErrConfig and none", err, calls)
	}
	if _, err := r.New(ctx, "picky", EngineOptions{Model: "m"}); !errors.Is(err, broken) || !strings.Contains(err.Error(), "engine picky: ") {
		t.Fatalf("New with a failing constructor = %v", err)
	}
	if _, err := r.New(ctx, "nope", EngineOptions{}); !errors.Is(err, ErrUnknownEngine) || !strings.Contains(err.Error(), "registered: espeak, fake, http, picky") {
		t.Fatalf("New of an unknown engine = %v", err)
	}
}
