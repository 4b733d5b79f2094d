package inference

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestModelFileLimits: a model file is checked (regular, at most
// MaxModelBytes) before ONNX Runtime reads it.
func TestModelFileLimits(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.onnx")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: no disk space, but Stat says MaxModelBytes+1.
	if err := f.Truncate(MaxModelBytes + 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{huge, "above the limit"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "missing.onnx"), "no such file"},
	} {
		if _, err := rt.LoadModel(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadModel(%s): %v, want an error saying %q", c.path, err, c.want)
		}
	}
}
