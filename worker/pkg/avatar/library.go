package avatar

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/avatarfleet/avatarfleet/worker/assets"
)

// DefaultName is the name of the bundled default avatar.
const DefaultName = "default"

// DefaultFace is the face detector's box on the embedded astronaut photo
// (facedetect finds (180,62)-(268,174), p≈1.0). It is fixed here so that
// the default avatar loads without ONNX Runtime; a test checks it against
// the detector.
func DefaultFace() image.Rectangle { return image.Rect(180, 62, 268, 174) }

// ErrNotFound is wrapped by Library.Get's error for an unknown name.
const ErrNotFound Error = "avatar: no such avatar"

// Default builds the default avatar from the embedded astronaut photo
// (FromFace with DefaultFace and the default BuildOptions; about half a
// second on two cores, done once per process by LoadLibrary). It keeps only
// the I420 frames (about 20 MB).
func Default() (*Pack, error) {
	img, err := png.Decode(bytes.NewReader(assets.AstronautPNG))
	if err != nil {
		return nil, fmt.Errorf("avatar: decoding the embedded astronaut photo: %w", err)
	}
	p, err := FromFace(img, DefaultFace(), BuildOptions{Name: DefaultName})
	if err != nil {
		return nil, fmt.Errorf("avatar: default avatar: %w", err)
	}
	p.src = nil // 50 MB of RGBA only Save would use; it writes the I420 frames instead
	return p, nil
}

// Library is the avatars a worker can show: the packs of a directory plus
// the default. It is immutable and safe for concurrent use.
type Library struct {
	packs    map[string]*Pack
	problems []error
}

// LoadLibrary loads the default avatar and, if dir is not empty, every
// pack directory in dir: each subdirectory whose name does not start with
// "." is one pack, and its manifest's name must be the directory's name.
// A pack that fails to load is left out and reported by Problems; only an
// unreadable dir (or a broken default) fails LoadLibrary. A pack named
// "default" in dir replaces the bundled one.
func LoadLibrary(dir string, opts LoadOptions) (*Library, error) {
	l := &Library{packs: map[string]*Pack{}}
	var entries []os.DirEntry
	if dir != "" {
		var err error
		if entries, err = os.ReadDir(dir); err != nil {
			return nil, fmt.Errorf("avatar: reading the avatar directory: %w", err)
		}
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		if !e.IsDir() {
			if e.Type()&os.ModeSymlink == 0 {
				continue // a README or the like
			}
			if st, err := os.Stat(path); err != nil || !st.IsDir() {
				continue
			}
		}
		p, err := Load(path, opts)
		if err == nil && p.Name() != name {
			err = fmt.Errorf("avatar: pack %s: %w: its manifest names it %q", path, ErrInvalid, p.Name())
		}
		if err != nil {
			l.problems = append(l.problems, err)
			continue
		}
		l.packs[name] = p
	}
	if _, ok := l.packs[DefaultName]; !ok {
		p := opts.Default
		if p == nil {
			var err error
			if p, err = Default(); err != nil {
				return nil, err
			}
		}
		l.packs[DefaultName] = p
	}
	return l, nil
}

// Get is the pack named name; "" means the default.
func (l *Library) Get(name string) (*Pack, error) {
	if name == "" {
		name = DefaultName
	}
	if p, ok := l.packs[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
}

// Default is the default avatar.
func (l *Library) Default() *Pack { return l.packs[DefaultName] }

// Names lists the avatars, sorted.
func (l *Library) Names() []string {
	names := make([]string, 0, len(l.packs))
	for n := range l.packs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Problems are the errors of the packs LoadLibrary left out (nil if none).
func (l *Library) Problems() []error { return append([]error(nil), l.problems...) }

// Err joins Problems into one error, or nil.
func (l *Library) Err() error { return errors.Join(l.problems...) }
