package catalog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiclient"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/cli"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// writePack writes a one-frame avatar pack of a flat colour with a darker
// square where a face would be, and loads it with the worker's loader.
func writePack(t *testing.T, dir, name string, w, h int, c color.RGBA) *avatar.Pack {
	t.Helper()
	pdir := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Join(pdir, "frames"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, avatar.FramePath(0)), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	m := fmt.Sprintf(`{"name": %q, "version": 1, "width": %d, "height": %d, "fps": 25, "frames": 1, "face_boxes": [[16, 16, 32, 32]]}`, name, w, h)
	if err := os.WriteFile(filepath.Join(pdir, avatar.ManifestFile), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := avatar.Load(pdir, avatar.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// previews renders the packs' previews the way the worker binary does.
func previews(t *testing.T, packs ...*avatar.Pack) server.Previews {
	t.Helper()
	out := map[string]server.Preview{}
	for _, p := range packs {
		img, r, err := p.Preview(avatar.PreviewMaxSide)
		if err != nil {
			t.Fatal(err)
		}
		out[p.Name()] = server.Preview{Image: img, ContentType: avatar.PreviewContentType, Width: r.Dx(), Height: r.Dy()}
	}
	return func(name string) (server.Preview, bool) {
		p, ok := out[name]
		return p, ok
	}
}

func names(packs ...*avatar.Pack) []string {
	var out []string
	for _, p := range packs {
		out = append(out, p.Name())
	}
	return out
}

var (
	red  = color.RGBA{200, 40, 40, 255}
	blue = color.RGBA{40, 60, 210, 255}
	grey = color.RGBA{128, 128, 128, 255}
)

// TestCatalogAggregatesWorkers: two workers with different avatar packs and
// voices are listed as one catalogue (counts, slots, engines, sorted); a
// session reserves a slot that the catalogue's free slots show; previews
// come from a worker serving the avatar, decode as JPEG with the pack's
// colour and size, and revalidate with ETag; a drained or stopped worker's
// avatars leave the lists; every route wants an API key.
func TestCatalogAggregatesWorkers(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	bob := writePack(t, dirA, "bob", 320, 240, red)
	sharedA := writePack(t, dirA, "shared", 64, 64, grey)
	zoe := writePack(t, dirB, "zoe", 640, 480, blue)
	sharedB := writePack(t, dirB, "shared", 64, 64, grey)
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{
		{ID: "wa", SlotsPerGPU: 2, Avatars: names(bob, sharedA), Voices: []string{"default", "en-us"}, TTSEngine: "espeak",
			Previews: previews(t, bob, sharedA)},
		{ID: "wb", GPUs: 2, SlotsPerGPU: 3, Avatars: names(sharedB, zoe), Voices: []string{"default", "alloy"}, TTSEngine: "http",
			Previews: previews(t, sharedB, zoe)},
		{ID: "wc", SlotsPerGPU: 1, Avatars: []string{"ghost"}, Voices: []string{"whisper"}, TTSEngine: "espeak"},
	}})
	sk := testfleet.SessionsKey
	client, err := apiclient.New(apiclient.Options{BaseURL: f.URL(0), APIKey: sk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// An admin drains wc: its avatar and voice leave the catalogue.
	if r := f.MustDo(0, "POST", "/v1/workers/wc/drain", testfleet.AdminKey, nil); r.Status != http.StatusAccepted {
		t.Fatalf("drain wc: %d %s", r.Status, r.Body)
	}
	f.Eventually(10*time.Second, "ghost leaves the catalogue", func() bool {
		avs, err := client.ListAvatars(ctx)
		return err == nil && len(avs) == 3
	})

	base := f.URL(0) + "/v1/avatars/"
	wantAvatars := []apiv1.Avatar{
		{Name: "bob", Workers: 1, Slots: 2, FreeSlots: 2, PreviewURL: base + "bob/preview"},
		{Name: "shared", Workers: 2, Slots: 8, FreeSlots: 8, PreviewURL: base + "shared/preview"},
		{Name: "zoe", Workers: 1, Slots: 6, FreeSlots: 6, PreviewURL: base + "zoe/preview"},
	}
	avs, err := client.ListAvatars(ctx)
	if err != nil || !reflect.DeepEqual(avs, wantAvatars) {
		t.Fatalf("avatars %+v (%v)\nwant %+v", avs, err, wantAvatars)
	}
	wantVoices := []apiv1.Voice{
		{Name: "alloy", Engines: []string{"http"}, Workers: 1},
		{Name: "default", Engines: []string{"espeak", "http"}, Workers: 2},
		{Name: "en-us", Engines: []string{"espeak"}, Workers: 1},
	}
	vs, err := client.ListVoices(ctx)
	if err != nil || !reflect.DeepEqual(vs, wantVoices) {
		t.Fatalf("voices %+v (%v)\nwant %+v", vs, err, wantVoices)
	}

	// A session of bob takes one of wa's slots: bob and shared show it.
	r := f.MustDo(0, "POST", "/v1/sessions", sk, map[string]any{"avatar": "bob", "voice": "en-us"})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	f.Eventually(10*time.Second, "free slots follow the reservation", func() bool {
		avs, err := client.ListAvatars(ctx)
		return err == nil && len(avs) == 3 && avs[0].FreeSlots == 1 && avs[1].FreeSlots == 7 && avs[2].FreeSlots == 6
	})

	// Previews: the right worker's pack, scaled, decodable.
	for _, tt := range []struct {
		name string
		size image.Point
		c    color.RGBA
	}{
		{"bob", image.Pt(256, 192), red},
		{"zoe", image.Pt(256, 192), blue},
		{"shared", image.Pt(64, 64), grey},
	} {
		data, ct, err := client.AvatarPreview(ctx, tt.name)
		if err != nil || ct != "image/jpeg" {
			t.Fatalf("preview %s: %q %v", tt.name, ct, err)
		}
		img, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("preview %s: decode: %v", tt.name, err)
		}
		if img.Bounds().Size() != tt.size {
			t.Errorf("preview %s: %v, want %v", tt.name, img.Bounds().Size(), tt.size)
		}
		cr, cg, cb, _ := img.At(tt.size.X/2, tt.size.Y/2).RGBA()
		got := [3]int{int(cr >> 8), int(cg >> 8), int(cb >> 8)}
		want := [3]int{int(tt.c.R), int(tt.c.G), int(tt.c.B)}
		for i := range 3 {
			if d := got[i] - want[i]; d > 8 || d < -8 {
				t.Errorf("preview %s: colour %v, want about %v", tt.name, got, want)
				break
			}
		}
	}

	// ETag: the same image again is 304.
	r = f.MustDo(0, "GET", "/v1/avatars/zoe/preview", sk, nil)
	etag := r.Header.Get("ETag")
	if r.Status != http.StatusOK || etag == "" {
		t.Fatalf("preview: %d ETag %q", r.Status, etag)
	}
	if r = f.MustDo(0, "GET", "/v1/avatars/zoe/preview", sk, nil, "If-None-Match", etag); r.Status != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.Status)
	}

	// Refusals: unknown, malformed, the drained worker's, no key, bad key.
	for _, tt := range []struct {
		path, key string
		status    int
	}{
		{"/v1/avatars/nobody/preview", sk, http.StatusNotFound},
		{"/v1/avatars/ghost/preview", sk, http.StatusNotFound},
		{"/v1/avatars/..%2Fbob/preview", sk, http.StatusNotFound},
		{"/v1/avatars", "", http.StatusUnauthorized},
		{"/v1/voices", "not-a-key-0123456789", http.StatusUnauthorized},
		{"/v1/avatars/bob/preview", "", http.StatusUnauthorized},
	} {
		if r := f.MustDo(0, "GET", tt.path, tt.key, nil); r.Status != tt.status {
			t.Errorf("GET %s: %d %s, want %d", tt.path, r.Status, r.Body, tt.status)
		}
	}

	// avatarctl avatars list against the fleet.
	var out, errOut bytes.Buffer
	env := map[string]string{cli.EnvURL: f.URL(0), cli.EnvAPIKey: sk}
	code := cli.Run(ctx, cli.Options{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, []string{"avatars", "list"})
	if code != 0 || !strings.HasPrefix(out.String(), "NAME") || !strings.Contains(out.String(), "zoe") || strings.Contains(out.String(), "ghost") {
		t.Fatalf("avatars list: %d %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	code = cli.Run(ctx, cli.Options{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, []string{"-o", "json", "voices", "list"})
	var vl apiv1.VoiceList
	if code != 0 || json.Unmarshal(out.Bytes(), &vl) != nil || !reflect.DeepEqual(vl.Voices, wantVoices) {
		t.Fatalf("voices list -o json: %d %q", code, out.String())
	}

	// wb stops: zoe goes, shared is wa's alone, zoe's preview is gone.
	if err := f.StopWorker("wb"); err != nil {
		t.Fatal(err)
	}
	f.Eventually(20*time.Second, "wb's avatars leave the catalogue", func() bool {
		avs, err := client.ListAvatars(ctx)
		return err == nil && len(avs) == 2 && avs[1].Name == "shared" && avs[1].Workers == 1
	})
	if r := f.MustDo(0, "GET", "/v1/avatars/zoe/preview", sk, nil); r.Status != http.StatusNotFound {
		t.Fatalf("preview of a gone worker's avatar: %d", r.Status)
	}
	if _, _, err := client.AvatarPreview(ctx, "shared"); err != nil {
		t.Fatalf("preview of shared from wa: %v", err)
	}
}
