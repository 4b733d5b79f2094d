package avatar

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/assets"
	"github.com/avatarfleet/avatarfleet/worker/pkg/facedetect"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
)

func astronaut(t testing.TB) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(assets.AstronautPNG))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func newDetector(t testing.TB) *facedetect.Detector {
	t.Helper()
	rt, err := inference.NewRuntime(inference.RuntimeOptions{})
	if err != nil {
		t.Fatalf("NewRuntime: %v (run scripts/setup.sh first)", err)
	}
	d, err := facedetect.New(rt, facedetect.Options{})
	if err != nil {
		rt.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		if err := rt.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

func TestBuildAstronaut(t *testing.T) {
	det := newDetector(t)
	img := astronaut(t)
	start := time.Now()
	// Fewer frames than the default: the race detector makes resampling slow.
	p, err := Build(img, det, BuildOptions{Name: "astro", Frames: 12})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Build (detect + %d frames): %v", p.Len(), time.Since(start))
	faces, err := det.Detect(img)
	if err != nil || len(faces) != 1 {
		t.Fatalf("Detect: %v %v", faces, err)
	}
	face := faces[0].Box
	if p.Len() != 12 || p.FPS() != DefaultBuildFPS || p.Width() != 512 || p.Height() != 512 {
		t.Errorf("pack %+v", p.Manifest())
	}
	for i := range p.Len() {
		b := p.Box(i)
		if !face.In(b) {
			t.Fatalf("frame %d: box %v does not contain the face %v", i, b, face)
		}
		if b.Min.X%2 != 0 || b.Min.Y%2 != 0 || b.Dx()%2 != 0 || b.Dy()%2 != 0 {
			t.Fatalf("frame %d: box %v is not even-aligned", i, b)
		}
		if d := b.Dx() - b.Dy(); d < -2 || d > 2 {
			t.Fatalf("frame %d: box %v is not square", i, b)
		}
		if b.Max.Y < face.Max.Y+face.Dy()/20 {
			t.Fatalf("frame %d: box %v leaves no room below the chin of %v", i, b, face)
		}
	}
	// The face stays put while the picture breathes: the detector finds
	// it within a pixel or two on the frame of largest scale.
	last, _ := p.Frame(p.Len() - 1)
	moved, err := det.Detect(last)
	if err != nil || len(moved) != 1 {
		t.Fatalf("Detect on the last frame: %v %v", moved, err)
	}
	if d := moved[0].Box.Min.Sub(face.Min); d.X*d.X+d.Y*d.Y > 8 {
		t.Errorf("face moved from %v to %v", face, moved[0].Box)
	}
	// Frames differ by little from one to the next (smooth motion).
	a, b := p.Image(0), p.Image(1)
	var diff int
	for i := range a.Y {
		d := int(a.Y[i]) - int(b.Y[i])
		diff += max(d, -d)
	}
	if mean := float64(diff) / float64(len(a.Y)); mean > 2 {
		t.Errorf("frames 0 and 1 differ by %.2f per luma sample", mean)
	}
}

func TestDefaultFaceMatchesDetector(t *testing.T) {
	faces, err := newDetector(t).Detect(astronaut(t))
	if err != nil || len(faces) != 1 {
		t.Fatalf("Detect: %v %v", faces, err)
	}
	got, want := faces[0].Box, DefaultFace()
	if d := got.Min.Sub(want.Min); abs(d.X) > 2 || abs(d.Y) > 2 {
		t.Errorf("detector %v, DefaultFace %v", got, want)
	}
	if d := got.Max.Sub(want.Max); abs(d.X) > 2 || abs(d.Y) > 2 {
		t.Errorf("detector %v, DefaultFace %v", got, want)
	}
}

func abs(v int) int { return max(v, -v) }

type fakeDetector []facedetect.Face

func (f fakeDetector) Detect(image.Image) ([]facedetect.Face, error) { return f, nil }

func TestBuildErrors(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 200, 100))
	one := facedetect.Face{Box: image.Rect(80, 20, 120, 70), Score: 1}
	for _, c := range []struct {
		name string
		det  Detector
		opts BuildOptions
		want string
	}{
		{"no face", fakeDetector{}, BuildOptions{Name: "a"}, "need exactly one face, found 0"},
		{"two faces", fakeDetector{one, one}, BuildOptions{Name: "a"}, "need exactly one face, found 2"},
		{"bad name", fakeDetector{one}, BuildOptions{Name: "a/b"}, `name "a/b" must match`},
		{"breath", fakeDetector{one}, BuildOptions{Name: "a", Breath: 0.5}, "breath 0.5 above 0.01"},
		{"frames", fakeDetector{one}, BuildOptions{Name: "a", Frames: 5000}, "frames 5000"},
		{"face outside", fakeDetector{{Box: image.Rect(300, 300, 400, 400)}}, BuildOptions{Name: "a"}, "too small or outside"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(img, c.det, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Build: %v; want %q", err, c.want)
			}
		})
	}
	if _, err := Build(img, fakeDetector{}, BuildOptions{Name: "a"}); !errors.Is(err, ErrFaces) {
		t.Errorf("no face: %v is not ErrFaces", err)
	}
}

// A large odd-sized photo is scaled into the limits and cropped even; a
// face near the edge gets a box moved inside the frame.
func TestBuildFitsAndClamps(t *testing.T) {
	img := image.NewRGBA(image.Rect(10, 10, 10+2001, 10+601))
	face := image.Rect(10, 480, 130, 611) // touches the left and bottom edges
	p, err := FromFace(img, face, BuildOptions{Name: "big", Frames: 2, Breath: -1})
	if err != nil {
		t.Fatal(err)
	}
	if p.Width() > MaxLongSide || p.Height() > MaxShortSide || p.Width()%2 != 0 || p.Height()%2 != 0 {
		t.Errorf("size %dx%d", p.Width(), p.Height())
	}
	if b := p.Box(0); !b.In(image.Rect(0, 0, p.Width(), p.Height())) || b.Min.X != 0 || b.Max.Y != p.Height() {
		t.Errorf("box %v in %dx%d", b, p.Width(), p.Height())
	}
	// A black photo has no mouth: the pack is built without one (the
	// fallback: the crop comes from the face box alone).
	if m, ok := p.Mouth(0); ok || len(p.Manifest().Mouths) != 0 {
		t.Errorf("mouth %+v in a black photo", m)
	}
}

// defaultPack builds the default avatar once for the tests that need it
// (slow under the race detector).
func defaultPack(t testing.TB) *Pack {
	t.Helper()
	defaultOnce.Do(func() {
		start := time.Now()
		defaultBuilt, defaultErr = Default()
		t.Logf("Default(): %v", time.Since(start))
	})
	if defaultErr != nil {
		t.Fatal(defaultErr)
	}
	return defaultBuilt
}

var (
	defaultOnce  sync.Once
	defaultBuilt *Pack
	defaultErr   error
)

func TestDefaultPack(t *testing.T) {
	p := defaultPack(t)
	if p.Name() != DefaultName || p.Len() != DefaultBuildFrames || p.Width() != 512 || p.Height() != 512 ||
		p.Box(0) != image.Rect(162, 62, 286, 186) || !DefaultFace().In(p.Box(0)) {
		t.Errorf("default pack %+v", p.Manifest())
	}
	// The crop is aligned on the mouth: its centre at MouthRow of the
	// crop's height (within a pixel: the box is even-aligned) and in the
	// middle, the whole mouth in the lower half.
	m, ok := p.Mouth(0)
	b := p.Box(0)
	if !ok {
		t.Fatal("the default pack has no mouth")
	}
	c := m.Center()
	if dy := float64(c.Y-b.Min.Y) - MouthRow*float64(b.Dy()); dy < -1.5 || dy > 1.5 {
		t.Errorf("mouth centre %v is %.1f rows off %v of the crop %v", c, dy, MouthRow, b)
	}
	if dx := c.X - (b.Min.X+b.Max.X)/2; dx < -2 || dx > 2 {
		t.Errorf("mouth centre %v is %d columns off the crop %v's middle", c, dx, b)
	}
	if m.Box.Min.Y < b.Min.Y+b.Dy()/2 || !m.Box.In(b) {
		t.Errorf("mouth %v is not in the lower half of the crop %v", m.Box, b)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	// A short pack: PNG coding is slow under the race detector.
	p, err := FromFace(astronaut(t), DefaultFace(), BuildOptions{Name: DefaultName, Frames: 6})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), DefaultName)
	start := time.Now()
	if err := p.Save(dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("Save: %v", time.Since(start))
	if err := p.Save(dir); err == nil {
		t.Error("Save over an existing pack succeeded")
	}
	start = time.Now()
	q, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Load: %v", time.Since(start))
	if q.Len() != p.Len() || q.Box(7) != p.Box(7) || q.Index(60) != p.Index(60) {
		t.Errorf("loaded %+v, built %+v", q.Manifest(), p.Manifest())
	}
	for i := range p.Len() {
		if !bytes.Equal(p.Image(i).Y, q.Image(i).Y) || !bytes.Equal(p.Image(i).Cr, q.Image(i).Cr) {
			t.Fatalf("frame %d differs after Save and Load", i)
		}
	}
	entries, err := os.ReadDir(filepath.Dir(dir))
	if err != nil || len(entries) != 1 {
		t.Errorf("Save left %v (%v)", entries, err)
	}
}

func TestLibrary(t *testing.T) {
	dir := t.TempDir()
	writePack(t, filepath.Join(dir, "alice"), goodManifest, 3, 64, 48)
	writePack(t, filepath.Join(dir, "bob"), strings.Replace(goodManifest, `"width": 64`, `"width": 63`, 1), 3, 63, 48)
	writePack(t, filepath.Join(dir, "carol"), goodManifest, 3, 64, 48) // named alice inside
	writePack(t, filepath.Join(dir, ".alice.tmp-1"), goodManifest, 3, 64, 48)
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("packs"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := LoadLibrary(dir, LoadOptions{Default: defaultPack(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(l.Names(), ","); got != "alice,default" {
		t.Errorf("names %s", got)
	}
	probs := l.Problems()
	if len(probs) != 2 || !strings.Contains(probs[0].Error(), "bob") || !strings.Contains(probs[1].Error(), `its manifest names it "alice"`) {
		t.Errorf("problems %v", probs)
	}
	if p, err := l.Get(""); err != nil || p != l.Default() || p.Name() != DefaultName {
		t.Errorf("Get(\"\") = %v, %v", p, err)
	}
	if _, err := l.Get("zed"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(zed): %v", err)
	}
	if _, err := LoadLibrary(filepath.Join(dir, "nope"), LoadOptions{Default: l.Default()}); err == nil {
		t.Error("missing directory accepted")
	}
	only, err := LoadLibrary("", LoadOptions{Default: l.Default()})
	if err != nil || strings.Join(only.Names(), ",") != "default" || only.Err() != nil {
		t.Errorf("default-only library: %v %v", only, err)
	}
}

func BenchmarkDefault(b *testing.B) {
	for b.Loop() {
		if _, err := Default(); err != nil {
			b.Fatal(err)
		}
	}
}

// One mouth serves every frame: the idle motion (scaling about the face)
// moves the lips by under a pixel, so the mouth located on the frame of
// largest scale is the stored one within a pixel.
func TestMouthStillOnLastFrame(t *testing.T) {
	p := defaultPack(t)
	want, ok := p.Mouth(0)
	if !ok {
		t.Fatal("no mouth")
	}
	last := p.Len() - 1
	if got, ok := p.Mouth(last); !ok || got != want {
		t.Fatalf("Mouth(%d) = %+v, Mouth(0) = %+v", last, got, want)
	}
	img, _ := p.Frame(p.Period() / 2) // the ping-pong's turn: the last frame
	got, err := LocateMouth(img, DefaultFace())
	if err != nil {
		t.Fatal(err)
	}
	if !near(got.Left, want.Left, 1) || !near(got.Right, want.Right, 1) || abs(got.Line-want.Line) > 1 {
		t.Errorf("on frame %d: %+v; stored %+v", last, got, want)
	}
}
