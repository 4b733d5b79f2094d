package avatar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadSizeChecksBeforeReading: an avatar.json or frame file above its
// limit is refused from its size alone (the files here are sparse: they
// would take gigabytes to read), as is a non-regular frame.
func TestLoadSizeChecksBeforeReading(t *testing.T) {
	grow := func(t *testing.T, path string, size int64) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		edit func(t *testing.T, dir string)
		want string
	}{
		{"huge manifest", func(t *testing.T, dir string) { grow(t, filepath.Join(dir, ManifestFile), 4<<30) }, "avatar.json is 4294967296 bytes, above 1048576"},
		{"huge frame", func(t *testing.T, dir string) { grow(t, filepath.Join(dir, FramePath(1)), 4<<30) }, "000001.png is 4294967296 bytes, above 33554432"},
		{"frame is a directory", func(t *testing.T, dir string) {
			p := filepath.Join(dir, FramePath(2))
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "alice")
			writePack(t, dir, goodManifest, 3, 64, 48)
			c.edit(t, dir)
			if _, err := Load(dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load: %v; want an error containing %q", err, c.want)
			}
		})
	}
}
