package avatar

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m))
}

// testPNG encodes a w×h picture with a gradient.
func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 5), 90, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writePack writes a pack directory: manifest as given, n frames of w×h.
func writePack(t testing.TB, dir, manifest string, n, w, h int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "frames"), 0o755); err != nil {
		t.Fatal(err)
	}
	if manifest != "" {
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := testPNG(t, w, h)
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, FramePath(i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const goodManifest = `{"name": "alice", "version": 1, "width": 64, "height": 48, "fps": 25, "frames": 3,
  "face_boxes": [[8, 8, 32, 32]], "idle": {"mode": "pingpong", "first": 0, "last": 2}}`

func TestLoadGood(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "alice")
	writePack(t, dir, goodManifest, 3, 64, 48)
	p, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "alice" || p.Len() != 3 || p.Width() != 64 || p.Height() != 48 || p.FPS() != 25 {
		t.Errorf("pack %+v", p.Manifest())
	}
	if b := p.Box(2); b != image.Rect(8, 8, 40, 40) {
		t.Errorf("box %v", b)
	}
	// A loaded pack saves its I420 frames back as RGB PNGs.
	again := filepath.Join(t.TempDir(), "alice")
	if err := p.Save(again); err != nil {
		t.Fatal(err)
	}
	if q, err := Load(again, LoadOptions{}); err != nil || q.Len() != 3 || q.Box(0) != p.Box(0) {
		t.Fatalf("reloading a saved loaded pack: %v", err)
	}
	// The I420 frame is the PNG's picture (BT.601 limited range: within 2).
	want := color.RGBA{uint8(10 * 7), uint8(20 * 5), 90, 255}
	got := p.Image(1).At(10, 20).(color.RGBA)
	for _, d := range []int{int(got.R) - int(want.R), int(got.G) - int(want.G), int(got.B) - int(want.B)} {
		if d < -3 || d > 3 {
			t.Errorf("pixel %v, want about %v", got, want)
			break
		}
	}
}

func TestLoadRejects(t *testing.T) {
	const tooMany = `{"name": "alice", "version": 1, "width": 64, "height": 48, "fps": 25, "frames": 1501, "face_boxes": [[8, 8, 32, 32]]}`
	cases := []struct {
		name     string
		manifest string // "" writes no avatar.json
		frames   int    // frame files written
		w, h     int    // their size
		opts     LoadOptions
		want     string
	}{
		{"missing json", "", 3, 64, 48, LoadOptions{}, "avatar.json: no such file"},
		{"bad json", `{"name": "alice",`, 3, 64, 48, LoadOptions{}, "unexpected EOF"},
		{"trailing data", goodManifest + `{}`, 3, 64, 48, LoadOptions{}, "data after the JSON object"},
		{"unknown field", strings.Replace(goodManifest, `"fps"`, `"colour": 1, "fps"`, 1), 3, 64, 48, LoadOptions{}, `unknown field "colour"`},
		{"frame file missing", goodManifest, 2, 64, 48, LoadOptions{}, "frames/000002.png: no such file"},
		{"frame count too large", tooMany, 0, 64, 48, LoadOptions{}, "frames 1501, want 1..1500"},
		{"frame size mismatch", goodManifest, 3, 64, 50, LoadOptions{}, ".png is 64x50; the manifest says 64x48"},
		{"boxes count", strings.Replace(goodManifest, `[[8, 8, 32, 32]]`, `[[8, 8, 32, 32], [8, 8, 32, 32]]`, 1), 3, 64, 48, LoadOptions{}, "2 face boxes for 3 frames"},
		{"box outside", strings.Replace(goodManifest, `[8, 8, 32, 32]`, `[40, 8, 32, 32]`, 1), 3, 64, 48, LoadOptions{}, "not inside the 64x48 frame"},
		{"box negative", strings.Replace(goodManifest, `[8, 8, 32, 32]`, `[-2, 8, 32, 32]`, 1), 3, 64, 48, LoadOptions{}, "not inside"},
		{"box short", strings.Replace(goodManifest, `[8, 8, 32, 32]`, `[8, 8, 32]`, 1), 3, 64, 48, LoadOptions{}, "want [x, y, w, h]"},
		{"box overflow", strings.Replace(goodManifest, `[8, 8, 32, 32]`, `[9223372036854775807, 8, 32, 32]`, 1), 3, 64, 48, LoadOptions{}, "not inside"},
		{"odd size", strings.Replace(goodManifest, `"width": 64`, `"width": 63`, 1), 3, 63, 48, LoadOptions{}, "must be even"},
		{"too large", strings.Replace(goodManifest, `"width": 64`, `"width": 2000`, 1), 0, 64, 48, LoadOptions{}, "above 1920x1080"},
		{"too many bytes", goodManifest, 3, 64, 48, LoadOptions{MaxBytes: 64 * 48}, "above the limit of 3072"},
		{"bad name", strings.Replace(goodManifest, `"alice"`, `"../alice"`, 1), 3, 64, 48, LoadOptions{}, `name "../alice" must match`},
		{"bad version", strings.Replace(goodManifest, `"version": 1`, `"version": 3`, 1), 3, 64, 48, LoadOptions{}, "version 3, want 1..2"},
		{"bad fps", strings.Replace(goodManifest, `"fps": 25`, `"fps": 0`, 1), 3, 64, 48, LoadOptions{}, "fps 0"},
		{"bad idle", strings.Replace(goodManifest, `"last": 2`, `"last": 3`, 1), 3, 64, 48, LoadOptions{}, "idle frames 0..3"},
		{"bad idle mode", strings.Replace(goodManifest, `"pingpong"`, `"shuffle"`, 1), 3, 64, 48, LoadOptions{}, `idle mode "shuffle"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "alice")
			writePack(t, dir, c.manifest, c.frames, c.w, c.h)
			_, err := Load(dir, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load: %v; want an error containing %q", err, c.want)
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name the pack", err)
			}
		})
	}
}

func TestLoadRejectsNonPNGAndSymlinkEscape(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "alice")
	writePack(t, dir, goodManifest, 3, 64, 48)
	if err := os.WriteFile(filepath.Join(dir, FramePath(1)), []byte("GIF89a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, LoadOptions{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "000001.png") {
		t.Errorf("not a PNG: %v", err)
	}
	outside := filepath.Join(t.TempDir(), "x.png")
	if err := os.WriteFile(outside, testPNG(t, 64, 48), 0o644); err != nil {
		t.Fatal(err)
	}
	frame1 := filepath.Join(dir, FramePath(1))
	if err := os.Remove(frame1); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, frame1); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("symlink out of the pack: %v", err)
	}
}

func TestIndexPingPong(t *testing.T) {
	seq := func(first, last int, mode string, n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = loopIndex(i, first, last, mode)
		}
		return out
	}
	eq := func(a, b []int) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	cases := []struct {
		first, last int
		mode        string
		want        []int
	}{
		{0, 3, PingPong, []int{0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0}},
		{2, 4, PingPong, []int{2, 3, 4, 3, 2, 3, 4, 3, 2}},
		{0, 1, PingPong, []int{0, 1, 0, 1, 0}},
		{5, 5, PingPong, []int{5, 5, 5}},
		{0, 2, Loop, []int{0, 1, 2, 0, 1, 2, 0}},
	}
	for _, c := range cases {
		if got := seq(c.first, c.last, c.mode, len(c.want)); !eq(got, c.want) {
			t.Errorf("%d..%d %s: %v, want %v", c.first, c.last, c.mode, got, c.want)
		}
	}
	// Period is the loop's true period, and no shorter one is: a shared
	// idle loop of Period frames repeats exactly.
	for _, c := range cases {
		per := loopPeriod(c.first, c.last, c.mode)
		s := seq(c.first, c.last, c.mode, 3*per+1)
		for i := range 2 * per {
			if s[i] != s[i+per] {
				t.Errorf("%d..%d %s: period %d, but tick %d shows %d and tick %d shows %d", c.first, c.last, c.mode, per, i, s[i], i+per, s[i+per])
			}
		}
		if per > 1 && eq(s[:per-1], s[1:per]) {
			t.Errorf("%d..%d %s: period %d is not the shortest", c.first, c.last, c.mode, per)
		}
	}
	// Consecutive ticks never jump by more than one frame.
	for tick := range 1000 {
		a, b := loopIndex(tick, 0, 49, PingPong), loopIndex(tick+1, 0, 49, PingPong)
		if d := a - b; d != 1 && d != -1 {
			t.Fatalf("tick %d: %d then %d", tick, a, b)
		}
	}
	dir := filepath.Join(t.TempDir(), "alice")
	writePack(t, dir, strings.Replace(goodManifest, `, "idle": {"mode": "pingpong", "first": 0, "last": 2}`, "", 1), 3, 64, 48)
	p, err := Load(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := []int{p.Index(-5), p.Index(0), p.Index(1), p.Index(2), p.Index(3), p.Index(4)}; !eq(got, []int{0, 0, 1, 2, 1, 0}) {
		t.Errorf("default idle loop %v", got)
	}
	if f, b := p.Frame(3); f != p.Image(1) || b != p.Box(1) {
		t.Error("Frame(3) is not frame 1")
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(goodManifest))
	f.Add([]byte(`{"name":"a","version":1,"width":2,"height":2,"fps":1,"frames":1,"face_boxes":[[0,0,16,16]]}`))
	f.Add([]byte(`{"face_boxes":[[1e30]]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(goodV2))
	f.Add([]byte(`{"name":"a","version":2,"width":64,"height":48,"fps":1,"frames":2,"face_boxes":[[0,0,32,32],[8,8,32,32]],` +
		`"mouths":[{"box":[10,20,20,8],"left":[10,24],"right":[29,24],"upper":20,"line":24,"lower":27}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "avatar: invalid pack: avatar.json: ") {
				t.Fatalf("error %q does not say what is wrong with avatar.json", err)
			}
			return
		}
		// A valid manifest's boxes are inside its frames, its mouths
		// inside their face boxes, corners and lip rows ordered.
		frame := image.Rect(0, 0, m.Width, m.Height)
		for i := range m.Frames {
			b := m.Box(i)
			if !b.In(frame) || b.Dx() < MinBoxSide {
				t.Fatalf("accepted box %v outside %v", b, frame)
			}
			mo, ok := m.Mouth(i)
			if ok != (len(m.Mouths) > 0) {
				t.Fatalf("frame %d: mouth %v of %v", i, ok, m.Mouths)
			}
			if ok && (!mo.Box.In(b) || mo.Box.Dx() < MinMouthSide || mo.Left.X >= mo.Right.X ||
				!mo.Left.In(mo.Box) || !mo.Right.In(mo.Box) || mo.Upper > mo.Line || mo.Line > mo.Lower ||
				mo.Upper < mo.Box.Min.Y || mo.Lower >= mo.Box.Max.Y) {
				t.Fatalf("frame %d: accepted mouth %+v in face box %v", i, mo, b)
			}
		}
	})
}
