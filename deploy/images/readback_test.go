package images_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

// repoRoot is the directory holding go.work, above the test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	return repotest.Root(t)
}

// readArchive reads the OCI layout tar file at path back with
// go-containerregistry's layout reader: the one image it holds and the
// annotations of its entry in index.json.
func readArchive(t *testing.T, path string) (v1.Image, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v: run `make images` first (make test does)", err)
	}
	defer f.Close()
	if err := untar(f, dir); err != nil {
		t.Fatalf("unpack %s: %v", path, err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("%s is no OCI layout: %v", path, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%s: %d manifests in index.json, want 1", path, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	// Every blob is read back and checked against its digest (its name).
	blobs, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if err != nil || len(blobs) < 4 {
		t.Fatalf("%s: blobs %v (%v), want manifest, config and 2 layers", path, blobs, err)
	}
	for _, b := range blobs {
		if err := verifyBlob(b); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return img, im.Manifests[0].Annotations
}

func verifyBlob(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != filepath.Base(p) {
		return fmt.Errorf("blob %s has digest sha256:%s", filepath.Base(p), got)
	}
	return nil
}

// extractLayer unpacks one layer into dir (owners kept: the test runs as
// root) and adds each member's header to hdrs by absolute path.
func extractLayer(t *testing.T, l v1.Layer, dir string, hdrs map[string]*tar.Header) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var dirs []*tar.Header
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read layer: %v", err)
		}
		name := filepath.Clean("/" + h.Name)
		if strings.Contains(filepath.Base(name), ".wh.") {
			t.Fatalf("layer has a whiteout %s: the images have none", name)
		}
		hdrs[name] = h
		if err := writeMember(tr, h, dir, name); err != nil {
			t.Fatalf("extract %s: %v", name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, h)
		}
	}
	for _, h := range dirs { // modes last: a 0555 directory must first take its children
		if err := os.Chmod(filepath.Join(dir, filepath.Clean("/"+h.Name)), os.FileMode(h.Mode&0o777)|specialBits(h.Mode)); err != nil {
			t.Fatal(err)
		}
	}
}

func specialBits(mode int64) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// untar unpacks a plain tar (an OCI layout: files and directories only).
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeDir && h.Typeflag != tar.TypeReg {
			return fmt.Errorf("%s: unexpected type %c in a layout", h.Name, h.Typeflag)
		}
		if err := writeMember(tr, h, dir, filepath.Clean("/"+h.Name)); err != nil {
			return err
		}
	}
}

func writeMember(r io.Reader, h *tar.Header, dir, name string) error {
	p := filepath.Join(dir, name)
	if !strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator)) && p != filepath.Clean(dir) {
		return fmt.Errorf("%s escapes the root", h.Name)
	}
	mode := os.FileMode(h.Mode&0o777) | specialBits(h.Mode)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	case tar.TypeReg:
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(h.Linkname, p); err != nil {
			return err
		}
	case tar.TypeLink:
		if err := os.Link(filepath.Join(dir, filepath.Clean("/"+h.Linkname)), p); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unexpected member type %c", h.Typeflag)
	}
	return os.Lchown(p, h.Uid, h.Gid)
}

// gitHead is the commit checked out, or "" where there is no git checkout.
func gitHead(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
