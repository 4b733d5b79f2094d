package images

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// entry is one member of a layer: its header and, for a regular file, the
// file its bytes come from.
type entry struct {
	hdr tar.Header
	src string
}

// layerSpec collects a layer's members by name; written in name order with
// one fixed time, so equal inputs give an identical tar stream.
type layerSpec struct {
	entries map[string]*entry
	// hardlinks maps a (device, inode) already added to its member name.
	hardlinks map[[2]uint64]string
}

func newLayerSpec() *layerSpec {
	return &layerSpec{entries: map[string]*entry{}, hardlinks: map[[2]uint64]string{}}
}

// clean turns an absolute image path into a tar member name ("usr/bin/x").
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (l *layerSpec) put(e *entry) {
	e.hdr.Name = clean(e.hdr.Name)
	l.entries[e.hdr.Name] = e
}

// addFile adds the regular file src at name with mode, owned by root.
func (l *layerSpec) addFile(name, src string, mode int64) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("add %s: %s is not a regular file", name, src)
	}
	l.put(&entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: st.Size()}, src: src})
	return nil
}

// addSymlink adds a symbolic link name -> target.
func (l *layerSpec) addSymlink(name, target string) {
	l.put(&entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}})
}

// addDir adds a directory with mode and owner.
func (l *layerSpec) addDir(name string, mode int64, uid, gid int) {
	l.put(&entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: gid}})
}

// addTree adds everything under root (a directory on this machine) at
// prefix in the image, keeping modes, owners, symbolic and hard links and
// device nodes. Sockets are refused: an image cannot carry them.
func (l *layerSpec) addTree(root, prefix string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", root, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("walk %s: %w", root, err)
		}
		if rel == "." && prefix == "/" {
			return nil // the image's root directory is the runtime's
		}
		name := path.Join(prefix, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("walk %s: no owner information", p)
		}
		h := tar.Header{Name: name, Mode: int64(info.Mode().Perm()), Uid: int(st.Uid), Gid: int(st.Gid)}
		if info.Mode()&fs.ModeSetuid != 0 {
			h.Mode |= 0o4000
		}
		if info.Mode()&fs.ModeSetgid != 0 {
			h.Mode |= 0o2000
		}
		if info.Mode()&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		e := &entry{hdr: h}
		switch m := info.Mode(); {
		case m.IsDir():
			e.hdr.Typeflag = tar.TypeDir
		case m.IsRegular():
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, seen := l.hardlinks[key]; seen && st.Nlink > 1 {
				e.hdr.Typeflag, e.hdr.Linkname = tar.TypeLink, first
				break
			}
			l.hardlinks[key] = clean(name)
			e.hdr.Typeflag, e.hdr.Size, e.src = tar.TypeReg, info.Size(), p
		case m&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("walk %s: %w", p, err)
			}
			e.hdr.Typeflag, e.hdr.Linkname = tar.TypeSymlink, target
		case m&fs.ModeNamedPipe != 0:
			e.hdr.Typeflag = tar.TypeFifo
		case m&fs.ModeDevice != 0:
			e.hdr.Typeflag = tar.TypeBlock
			if m&fs.ModeCharDevice != 0 {
				e.hdr.Typeflag = tar.TypeChar
			}
			e.hdr.Devmajor, e.hdr.Devminor = int64(major(uint64(st.Rdev))), int64(minor(uint64(st.Rdev)))
		default:
			return fmt.Errorf("walk %s: unsupported file type %s", p, m.Type())
		}
		l.put(e)
		return nil
	})
}

func major(dev uint64) uint64 { return ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xfffff000) }
func minor(dev uint64) uint64 { return (dev & 0xff) | ((dev >> 12) & 0xffffff00) }

// write writes the layer as an uncompressed tar to w: members in name order,
// each parent directory before its children (added as root-owned 0755 where
// missing), every time set to mtime and no user or group names, so the
// bytes depend only on the content.
func (l *layerSpec) write(w io.Writer, mtime time.Time) error {
	for name := range l.entries {
		for dir := path.Dir(name); dir != "." && dir != "/"; dir = path.Dir(dir) {
			if _, ok := l.entries[dir]; !ok {
				l.entries[dir] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755}}
			}
		}
	}
	names := make([]string, 0, len(l.entries))
	for name := range l.entries {
		names = append(names, name)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, name := range names {
		e := l.entries[name]
		h := e.hdr
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		h.ModTime, h.Uname, h.Gname, h.Format = mtime.UTC().Truncate(time.Second), "", "", tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("layer member %s: %w", name, err)
		}
		if err := e.copyTo(tw); err != nil {
			return fmt.Errorf("layer member %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	return nil
}

func (e *entry) copyTo(w io.Writer) error {
	if e.hdr.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err != nil {
		return err
	}
	if n != e.hdr.Size {
		return fmt.Errorf("%s changed size while read (%d, then %d bytes)", e.src, e.hdr.Size, n)
	}
	return nil
}
