package inference

import (
	"errors"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/onnxgen"
)

// TestPasteMetadata: the paste mode a model declares is read and
// validated; none is "replace"; the default model declares "change".
func TestPasteMetadata(t *testing.T) {
	if PasteKey != onnxgen.MetaPaste {
		t.Fatalf("the reader's key %q is not the generator's %q", PasteKey, onnxgen.MetaPaste)
	}
	rt := newRuntime(t)
	for _, c := range []struct {
		name, value string
		set         bool
		want        string
		wantErr     string
	}{
		{name: "none", want: PasteReplace},
		{name: "change", value: "change", set: true, want: PasteChange},
		{name: "replace", value: "replace", set: true, want: PasteReplace},
		{name: "unknown", value: "blend", set: true, wantErr: `want "change" or "replace"`},
		{name: "long", value: strings.Repeat("x", 5000), set: true, wantErr: "…"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := passThrough(32)
			if c.set {
				data = onnxgen.AppendMetadata(data, PasteKey, c.value)
			}
			m, err := rt.LoadModelData("paste", data)
			if c.wantErr != "" {
				var ce *ContractError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), PasteKey) {
					t.Fatalf("%v; want a ContractError naming %s and saying %q", err, PasteKey, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx, err := m.NewContext(ContextOptions{Batch: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = ctx.Close() }()
			if m.Paste() != c.want || ctx.Paste() != c.want {
				t.Errorf("Paste %q, Context.Paste %q; want %q", m.Paste(), ctx.Paste(), c.want)
			}
		})
	}
	if m := loadDefault(t, rt); m.Paste() != PasteChange {
		t.Errorf("default model: Paste %q; want %q", m.Paste(), PasteChange)
	}
}
