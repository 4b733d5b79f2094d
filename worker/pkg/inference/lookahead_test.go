package inference

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// TestLookAheadMetadata: the look-ahead a model declares in its ONNX
// metadata is read where the model is loaded (from bytes and from a file),
// carried into its contexts, validated (0..200 whole ms), and a model that
// declares none gets the Wav2Lip window's 200 ms.
func TestLookAheadMetadata(t *testing.T) {
	rt := newRuntime(t)
	if LookAheadKey != onnxgen.MetaLookAhead {
		t.Fatalf("the reader's key %q is not the generator's %q", LookAheadKey, onnxgen.MetaLookAhead)
	}
	base := passThrough(96)
	for _, c := range []struct {
		name    string
		meta    []string // key, value pairs appended to the model
		want    time.Duration
		wantErr string
	}{
		{name: "none: the Wav2Lip window", want: 200 * time.Millisecond},
		{name: "80 ms", meta: []string{LookAheadKey, "80"}, want: 80 * time.Millisecond},
		{name: "0 ms", meta: []string{LookAheadKey, "0"}, want: 0},
		{name: "200 ms", meta: []string{LookAheadKey, "200"}, want: 200 * time.Millisecond},
		{name: "other keys are ignored", meta: []string{"author", "x", LookAheadKey, "120"}, want: 120 * time.Millisecond},
		{name: "past the window", meta: []string{LookAheadKey, "201"}, wantErr: "at most the 200 ms mel window"},
		{name: "negative", meta: []string{LookAheadKey, "-1"}, wantErr: "want an integer"},
		{name: "fractional", meta: []string{LookAheadKey, "80.5"}, wantErr: "want an integer"},
		{name: "empty", meta: []string{LookAheadKey, ""}, wantErr: "want an integer"},
		{name: "huge", meta: []string{LookAheadKey, "999999999999999999999"}, wantErr: "want an integer"},
		{name: "unit", meta: []string{LookAheadKey, "80ms"}, wantErr: "want an integer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := base
			for i := 0; i+1 < len(c.meta); i += 2 {
				data = onnxgen.AppendMetadata(data, c.meta[i], c.meta[i+1])
			}
			path := filepath.Join(t.TempDir(), "m.onnx")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, load := range []struct {
				how string
				f   func() (*Model, error)
			}{
				{"data", func() (*Model, error) { return rt.LoadModelData("meta", data) }},
				{"file", func() (*Model, error) { return rt.LoadModel(path) }},
			} {
				m, err := load.f()
				if c.wantErr != "" {
					var ce *ContractError
					if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.As(err, &ce) {
						t.Fatalf("%s: %v, want a ContractError saying %q", load.how, err, c.wantErr)
					}
					if !strings.Contains(err.Error(), LookAheadKey) {
						t.Errorf("%s: %v does not name the key", load.how, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", load.how, err)
				}
				if got := m.LookAhead(); got != c.want {
					t.Errorf("%s: LookAhead %v, want %v", load.how, got, c.want)
				}
				ctx, err := m.NewContext(ContextOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if got := ctx.LookAhead(); got != c.want {
					t.Errorf("%s: Context.LookAhead %v, want %v", load.how, got, c.want)
				}
				if err := ctx.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestBuilderMetadata: onnxgen's Builder writes metadata that ONNX Runtime
// reads back.
func TestBuilderMetadata(t *testing.T) {
	rt := newRuntime(t)
	b := onnxgen.NewBuilder("identity")
	mel := b.Input("mel", onnxgen.Fixed(1), onnxgen.Fixed(1), onnxgen.Fixed(80), onnxgen.Fixed(16))
	face := b.Input("face", onnxgen.Fixed(1), onnxgen.Fixed(6), onnxgen.Fixed(8), onnxgen.Fixed(8))
	_ = mel
	out := b.Op("Slice", []string{face, b.Ints(0), b.Ints(3), b.Ints(1)})
	b.Output(out, onnxgen.Fixed(1), onnxgen.Fixed(3), onnxgen.Fixed(8), onnxgen.Fixed(8))
	b.Metadata(LookAheadKey, "40")
	m, err := rt.LoadModelData("builder", b.Model().Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.LookAhead(); got != 40*time.Millisecond {
		t.Errorf("LookAhead %v, want 40ms", got)
	}
}

// passThrough is a contract model that declares nothing: it returns the
// reference face.
func passThrough(size int64) []byte {
	b := onnxgen.NewBuilder("pass_through")
	b.Input(onnxgen.MelInput, onnxgen.Dynamic("B"), onnxgen.Fixed(1), onnxgen.Fixed(onnxgen.MelBands), onnxgen.Fixed(onnxgen.MelFrames))
	face := b.Input(onnxgen.FaceInput, onnxgen.Dynamic("B"), onnxgen.Fixed(6), onnxgen.Fixed(size), onnxgen.Fixed(size))
	b.OpTo(onnxgen.FaceOutput, "Slice", []string{face, b.Ints(3), b.Ints(6), b.Ints(1)})
	b.Output(onnxgen.FaceOutput, onnxgen.Dynamic("B"), onnxgen.Fixed(3), onnxgen.Fixed(size), onnxgen.Fixed(size))
	return b.Model().Marshal()
}
