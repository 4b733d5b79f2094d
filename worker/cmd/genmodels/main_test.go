package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRunWritesOnceAndIsStable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "models")
	if err := run(dir, 96, "default"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "default.onnx")
	st1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st1.Mode().Perm() != 0o644 || st1.Size() < 1000 {
		t.Errorf("default.onnx: mode %v, %d bytes", st1.Mode(), st1.Size())
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, 96, "default"); err != nil {
		t.Fatal(err)
	}
	st2, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st2.ModTime().After(old.Add(time.Minute)) {
		t.Errorf("an up-to-date model was rewritten (modified %v)", st2.ModTime())
	}
	if _, err := os.Stat(filepath.Join(dir, "benchmark.onnx")); !os.IsNotExist(err) {
		t.Errorf("-only default wrote the benchmark model too (%v)", err)
	}
	for _, bad := range []struct {
		dir, only string
		size      int
	}{{"", "", 96}, {dir, "other", 96}, {dir, "default", 8}} {
		if err := run(bad.dir, bad.size, bad.only); err == nil {
			t.Errorf("run(%q, %d, %q): no error", bad.dir, bad.size, bad.only)
		}
	}
}
