//go:build dynamic

package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// TestRun writes the stills: one per level and the strip, each decodable,
// the strip as wide as the levels side by side.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	if err := run(dir, "", ""); err != nil {
		t.Fatal(err)
	}
	width := 0
	for _, lv := range levels {
		f, err := os.Open(filepath.Join(dir, "mouth-"+lv.name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		width += img.Bounds().Dx() + 4
	}
	f, err := os.Open(filepath.Join(dir, "mouth-strip.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	strip, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if strip.Bounds().Dx() != width-4 {
		t.Errorf("strip %v wide; want %d", strip.Bounds(), width-4)
	}
	if err := run(dir, filepath.Join(dir, "missing"), ""); err == nil {
		t.Error("a missing avatar pack was accepted")
	}
}
