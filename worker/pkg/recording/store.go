package recording

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// Store keeps finished recordings. A Recorder writes its file through an
// Object that becomes visible under its name only when committed.
type Store interface {
	// Create begins the object name; nothing is visible under name until
	// Commit.
	Create(ctx context.Context, name string) (Object, error)
	// Open reads a committed object and reports its size.
	Open(ctx context.Context, name string) (io.ReadCloser, int64, error)
	// String says where the store keeps its objects (for the logs and the
	// recording's metadata).
	String() string
	// Shared names the store for every worker that can read it, the same
	// for all workers configured with it (S3Options.Shared); "" for a
	// store only this worker reads (a directory).
	Shared() string
}

// Object is a recording being written. Write may block while the store
// keeps up (the Recorder writes from its own goroutine, never from the
// pipeline's). Exactly one of Commit and Abort ends it.
type Object interface {
	io.Writer
	// Commit makes the object visible under its name.
	Commit(ctx context.Context) error
	// Abort drops what was written.
	Abort()
}

// ErrNotFound: no committed object has that name.
var ErrNotFound = errors.New("recording: not found")

// namePattern is what an object name may be: the control plane makes them
// from the session and recording ids.
var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}(/[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127})?$`)

// ValidName checks an object name: one or two path elements of
// [a-zA-Z0-9_.-], none starting with a dot.
func ValidName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("recording: invalid object name %q", name)
	}
	return nil
}

// DirStore keeps recordings as files under a directory. A recording is
// written to a hidden temporary file beside its final name and renamed on
// Commit, so a reader never sees a partial file.
type DirStore struct{ dir string }

// NewDirStore makes dir if needed and checks it is a writable directory.
func NewDirStore(dir string) (*DirStore, error) {
	if dir == "" {
		return nil, errors.New("recording: directory store: empty path")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("recording: directory store %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("recording: directory store %s not writable: %w", dir, err)
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	return &DirStore{dir: dir}, nil
}

// String implements Store.
func (d *DirStore) String() string { return "dir:" + d.dir }

// Shared implements Store: a directory is this worker's own (a shared
// volume is not known as such).
func (d *DirStore) Shared() string { return "" }

// Path is where name is kept once committed.
func (d *DirStore) Path(name string) string { return filepath.Join(d.dir, filepath.FromSlash(name)) }

// Create implements Store.
func (d *DirStore) Create(_ context.Context, name string) (Object, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	final := d.Path(name)
	if err := os.MkdirAll(filepath.Dir(final), 0o750); err != nil {
		return nil, fmt.Errorf("recording: create %s: %w", name, err)
	}
	if _, err := os.Stat(final); err == nil {
		return nil, fmt.Errorf("recording: create %s: %w", name, fs.ErrExist)
	}
	f, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("recording: create %s: %w", name, err)
	}
	return &fileObject{f: f, buf: bufio.NewWriterSize(f, 64<<10), final: final}, nil
}

// Open implements Store.
func (d *DirStore) Open(_ context.Context, name string) (io.ReadCloser, int64, error) {
	if err := ValidName(name); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(d.Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("open %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("recording: open %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("recording: open %s: %w", name, err)
	}
	return f, st.Size(), nil
}

// fileObject is a DirStore object: a buffered temporary file. It is an
// io.WriterAt too, so the muxer can go back and write the seek index and
// the duration when it finishes.
type fileObject struct {
	f     *os.File
	buf   *bufio.Writer
	final string
}

func (o *fileObject) Write(p []byte) (int, error) { return o.buf.Write(p) }

func (o *fileObject) WriteAt(p []byte, off int64) (int, error) {
	if err := o.buf.Flush(); err != nil {
		return 0, err
	}
	return o.f.WriteAt(p, off)
}

func (o *fileObject) Commit(context.Context) error {
	err := errors.Join(o.buf.Flush(), o.f.Sync(), o.f.Close())
	if err == nil {
		err = os.Rename(o.f.Name(), o.final)
	}
	if err != nil {
		_ = os.Remove(o.f.Name())
		return fmt.Errorf("recording: commit %s: %w", o.final, err)
	}
	return nil
}

func (o *fileObject) Abort() {
	_ = o.f.Close()
	_ = os.Remove(o.f.Name())
}
