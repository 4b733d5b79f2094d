package avatar

import (
	"encoding/json"
	"errors"
	"image"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goodV2 is goodManifest at version 2 with a mouth inside its face box
// [8, 8, 32, 32].
const goodV2 = `{"name": "alice", "version": 2, "width": 64, "height": 48, "fps": 25, "frames": 3,
  "face_boxes": [[8, 8, 32, 32]],
  "mouths": [{"box": [14, 28, 20, 8], "left": [14, 31], "right": [33, 31], "upper": 28, "line": 31, "lower": 35}]}`

func TestManifestMouths(t *testing.T) {
	m, err := ParseManifest([]byte(goodV2))
	if err != nil {
		t.Fatal(err)
	}
	want := Mouth{Box: image.Rect(14, 28, 34, 36), Left: image.Pt(14, 31), Right: image.Pt(33, 31), Upper: 28, Line: 31, Lower: 35}
	for i := range m.Frames {
		if got, ok := m.Mouth(i); !ok || got != want {
			t.Errorf("Mouth(%d) = %+v, %v", i, got, ok)
		}
	}
	if c := want.Center(); c != image.Pt(23, 31) {
		t.Errorf("centre %v", c)
	}
	edit := func(old, new string) string { return strings.Replace(goodV2, old, new, 1) }
	for _, c := range []struct {
		name, manifest, want string
	}{
		{"v1 with mouths", edit(`"version": 2`, `"version": 1`), "mouths need version 2"},
		{"mouth count", edit(`"mouths": [{`, `"mouths": [{"box": [14, 28, 20, 8], "left": [14, 31], "right": [33, 31], "upper": 28, "line": 31, "lower": 35}, {`), "2 mouths for 3 frames"},
		{"box short", edit(`"box": [14, 28, 20, 8]`, `"box": [14, 28, 20]`), "must have box [x, y, w, h]"},
		{"corner short", edit(`"left": [14, 31]`, `"left": [14]`), "must have box"},
		{"box missing", edit(`"box": [14, 28, 20, 8], `, ``), "must have box"},
		{"box outside frame", edit(`"box": [14, 28, 20, 8]`, `"box": [50, 28, 20, 8]`), "is not inside the 64x48 frame"},
		{"box overflow", edit(`"box": [14, 28, 20, 8]`, `"box": [9223372036854775807, 28, 20, 8]`), "is not inside the 64x48 frame"},
		{"box negative", edit(`"box": [14, 28, 20, 8]`, `"box": [14, -28, 20, 8]`), "is not inside the 64x48 frame"},
		{"box outside face", edit(`"box": [14, 28, 20, 8]`, `"box": [30, 28, 20, 8]`), "not inside the face box"},
		{"box tiny", edit(`"box": [14, 28, 20, 8]`, `"box": [14, 28, 6, 8]`), "smaller than 8x4"},
		{"box tall", edit(`"box": [14, 28, 20, 8]`, `"box": [14, 18, 10, 18]`), "taller than it is wide"},
		{"corners swapped", edit(`"left": [14, 31], "right": [33, 31]`, `"left": [33, 31], "right": [14, 31]`), "left of right"},
		{"corner outside box", edit(`"left": [14, 31]`, `"left": [12, 31]`), "must lie in the mouth box"},
		{"corner far outside", edit(`"left": [14, 31]`, `"left": [-1000, 31]`), "outside the 64x48 frame"},
		{"rows unordered", edit(`"upper": 28, "line": 31`, `"upper": 32, "line": 31`), "must be ordered"},
		{"row below box", edit(`"lower": 35`, `"lower": 36`), "must be ordered"},
		{"unknown mouth field", edit(`"upper": 28`, `"top": 1, "upper": 28`), `unknown field "top"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(c.manifest))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParseManifest: %v; want an error containing %q", err, c.want)
			}
		})
	}
	// One mouth with a box per frame must fit every frame's box.
	perFrame := strings.Replace(goodV2, `[[8, 8, 32, 32]]`, `[[8, 8, 32, 32], [8, 8, 32, 32], [8, 8, 24, 24]]`, 1)
	if _, err := ParseManifest([]byte(perFrame)); err == nil || !strings.Contains(err.Error(), "mouth 0 (frame 2)") {
		t.Errorf("a mouth outside frame 2's box: %v", err)
	}
}

// setVersion1 rewrites a saved pack's manifest as version 1 (no mouths),
// as the previous format wrote it.
func setVersion1(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m.Version, m.Mouths = 1, nil
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "mouth") {
		t.Fatalf("version-1 manifest %s", data)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Loading: a version-2 pack keeps its mouth; a version-1 pack gets its
// mouth located on frame 0 (the astronaut) or none (a gradient), and is
// version 2 once loaded (Save writes it so).
func TestLoadMigratesVersion1(t *testing.T) {
	built, err := FromFace(astronaut(t), DefaultFace(), BuildOptions{Name: "astro", Frames: 2})
	if err != nil {
		t.Fatal(err)
	}
	want, ok := built.Mouth(0)
	if !ok {
		t.Fatal("built pack has no mouth")
	}
	v2 := filepath.Join(t.TempDir(), "astro")
	if err := built.Save(v2); err != nil {
		t.Fatal(err)
	}
	v1 := filepath.Join(t.TempDir(), "astro")
	if err := built.Save(v1); err != nil {
		t.Fatal(err)
	}
	setVersion1(t, v1)
	gradient := filepath.Join(t.TempDir(), "alice")
	writePack(t, gradient, goodManifest, 3, 64, 48)
	for _, c := range []struct {
		name  string
		dir   string
		mouth bool
		tol   int
	}{
		{"version 2", v2, true, 0},
		{"version 1 with a face", v1, true, 3},
		{"version 1 without a mouth", gradient, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Load(c.dir, LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if v := p.Manifest().Version; v != FormatVersion {
				t.Errorf("loaded version %d", v)
			}
			got, ok := p.Mouth(0)
			if ok != c.mouth {
				t.Fatalf("mouth %+v, %v; want found = %v", got, ok, c.mouth)
			}
			if !ok {
				return
			}
			if !near(got.Left, want.Left, c.tol) || !near(got.Right, want.Right, c.tol) || abs(got.Line-want.Line) > c.tol ||
				!near(got.Box.Min, want.Box.Min, c.tol) || !near(got.Box.Max, want.Box.Max, c.tol) {
				t.Errorf("mouth %+v, built %+v (±%d)", got, want, c.tol)
			}
			if p.Box(0) != built.Box(0) {
				t.Errorf("crop box %v, built %v: loading must not move it", p.Box(0), built.Box(0))
			}
			// Saved again, it is a version-2 pack with the same mouth.
			again := filepath.Join(t.TempDir(), "astro")
			if err := p.Save(again); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(again, ManifestFile))
			if err != nil {
				t.Fatal(err)
			}
			m, err := ParseManifest(data)
			if err != nil || m.Version != FormatVersion || len(m.Mouths) != 1 {
				t.Fatalf("saved manifest %s: %v", data, err)
			}
			if saved, _ := m.Mouth(0); saved != got {
				t.Errorf("saved mouth %+v, loaded %+v", saved, got)
			}
		})
	}
}

func TestAlignBox(t *testing.T) {
	mouthAt := func(x, y int) Mouth {
		return Mouth{Box: image.Rect(x-20, y-6, x+21, y+8), Left: image.Pt(x-20, y), Right: image.Pt(x+20, y), Upper: y - 6, Line: y, Lower: y + 7}
	}
	for _, c := range []struct {
		name  string
		box   image.Rectangle
		mouth Mouth
		w, h  int
		want  image.Rectangle
	}{
		// Centre (223, 143): x0 = 223.5 − 62 = 161.5 → 162; y0 = 143.5 − 86.8 = 56.7 → 57 → 56 (even).
		{"astronaut", image.Rect(162, 60, 286, 184), mouthAt(223, 143), 512, 512, image.Rect(162, 56, 286, 180)},
		{"already aligned", image.Rect(100, 100, 200, 200), mouthAt(150, 170), 512, 512, image.Rect(100, 100, 200, 200)},
		{"clamped to the frame", image.Rect(0, 0, 100, 100), mouthAt(30, 60), 512, 512, image.Rect(0, 0, 100, 100)},
		{"clamped at the bottom right", image.Rect(412, 412, 512, 512), mouthAt(490, 500), 512, 512, image.Rect(412, 412, 512, 512)},
		{"shift limited to 15 %", image.Rect(100, 100, 200, 200), mouthAt(250, 300), 512, 512, image.Rect(114, 114, 214, 214)},
		{"odd result made even", image.Rect(100, 100, 200, 200), mouthAt(152, 172), 512, 512, image.Rect(102, 102, 202, 202)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := alignBox(c.box, c.mouth, c.w, c.h)
			if got != c.want {
				t.Errorf("alignBox = %v, want %v", got, c.want)
			}
			if got.Dx() != c.box.Dx() || got.Dy() != c.box.Dy() || got.Min.X%2 != 0 || got.Min.Y%2 != 0 ||
				!got.In(image.Rect(0, 0, c.w, c.h)) {
				t.Errorf("alignBox = %v: not the same size, even-aligned, inside the frame", got)
			}
		})
	}
}
