package main

import (
	"bytes"
	"image"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"github.com/avatarfleet/avatarfleet/worker/assets"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m))
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestBuildAndCheck(t *testing.T) {
	dir := t.TempDir()
	photo := filepath.Join(dir, "astronaut.png")
	if err := os.WriteFile(photo, assets.AstronautPNG, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "avatars")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd("build", "--image", photo, "--name", "eileen", "--out", out, "--frames", "6")
	if code != 0 {
		t.Fatalf("build: %d %s", code, stderr)
	}
	if !strings.Contains(stdout, "6 frames of 512x512 at 25 fps") || !strings.Contains(stdout, ", mouth [") {
		t.Errorf("stdout %q", stdout)
	}
	p, err := avatar.Load(filepath.Join(out, "eileen"), avatar.LoadOptions{})
	if err != nil || p.Len() != 6 {
		t.Fatalf("Load: %v", err)
	}
	if !image.Rect(180, 62, 268, 174).In(p.Box(0)) {
		t.Errorf("box %v", p.Box(0))
	}
	if m, ok := p.Mouth(0); !ok || !m.Box.In(p.Box(0)) {
		t.Errorf("mouth %+v, %v in box %v", m, ok, p.Box(0))
	}
	if code, stdout, _ := runCmd("check", filepath.Join(out, "eileen")); code != 0 || !strings.Contains(stdout, "ok") || !strings.Contains(stdout, ", mouth [") {
		t.Errorf("check: %d %s", code, stdout)
	}
	if code, _, stderr := runCmd("build", "--image", photo, "--name", "eileen", "--out", out); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("second build: %d %s", code, stderr)
	}
}

func TestBuildRejects(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, enc func(*bytes.Buffer) error) string {
		var buf bytes.Buffer
		if err := enc(&buf); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	gifPath := write("x.gif", func(b *bytes.Buffer) error {
		return gif.Encode(b, image.NewPaletted(image.Rect(0, 0, 100, 100), palette.Plan9), nil)
	})
	tiny := write("tiny.jpg", func(b *bytes.Buffer) error {
		return jpeg.Encode(b, image.NewRGBA(image.Rect(0, 0, 10, 10)), nil)
	})
	gray := write("gray.jpg", func(b *bytes.Buffer) error {
		img := image.NewGray(image.Rect(0, 0, 320, 240))
		for i := range img.Pix {
			img.Pix[i] = 128
		}
		return jpeg.Encode(b, img, nil)
	})
	text := filepath.Join(dir, "x.txt")
	if err := os.WriteFile(text, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"build", "--image", gray}, 2, "needs --image, --name and --out"},
		{[]string{"build", "--image", text, "--name", "a", "--out", dir}, 1, "not a PNG or JPEG"},
		{[]string{"build", "--image", gifPath, "--name", "a", "--out", dir}, 1, "want PNG or JPEG"},
		{[]string{"build", "--image", tiny, "--name", "a", "--out", dir}, 1, "10x10; want 64..8192"},
		{[]string{"build", "--image", filepath.Join(dir, "nope.png"), "--name", "a", "--out", dir}, 1, "no such file"},
		{[]string{"build", "--image", gray, "--name", "a", "--out", dir}, 1, "need exactly one face, found 0"},
		{[]string{"build", "--image", gray, "--name", "../a", "--out", dir}, 2, "must match"},
		{[]string{"check"}, 2, "check needs pack directories"},
		{[]string{"check", dir}, 1, "avatar.json"},
	} {
		code, _, stderr := runCmd(c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
}
