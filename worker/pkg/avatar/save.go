package avatar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"runtime"

	"golang.org/x/sync/errgroup"
)

// Save writes the pack into dir, which must not exist yet (or be an empty
// directory); its parent must exist. The pack is written into a hidden
// temporary directory beside dir and renamed into place, so a failed Save
// leaves no half-written pack (LoadLibrary skips hidden directories).
func (p *Pack) Save(dir string) error {
	if err := p.save(dir); err != nil {
		return fmt.Errorf("avatar: saving %q to %s: %w", p.m.Name, dir, err)
	}
	return nil
}

func (p *Pack) save(dir string) error {
	dir = filepath.Clean(dir)
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(tmp, "frames"), 0o755); err != nil {
		return err
	}
	manifest, err := json.MarshalIndent(p.Manifest(), "", "  ")
	if err != nil {
		return err
	}
	// One line per face box instead of one per number.
	box := regexp.MustCompile(`\[\s*(-?\d+),\s*(-?\d+),\s*(-?\d+),\s*(-?\d+)\s*\]`)
	manifest = box.ReplaceAll(manifest, []byte("[$1, $2, $3, $4]"))
	if err := os.WriteFile(filepath.Join(tmp, ManifestFile), append(manifest, '\n'), 0o644); err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range p.frames {
		g.Go(func() error {
			var img image.Image = p.frames[i]
			if p.src != nil {
				img = p.src[i]
			}
			return writePNG(filepath.Join(tmp, FramePath(i)), img)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	done = true
	return nil
}

func writePNG(path string, img image.Image) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
