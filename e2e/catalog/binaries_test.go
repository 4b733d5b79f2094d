package catalog_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
)

// TestCatalogWithWorkerBinaries: bin/controlplane and two bin/worker
// processes, each with its own --avatars directory (bob on one, zoe on the
// other, the bundled default on both), list one catalogue; each worker
// renders its packs' previews itself, and the control plane fetches them
// over the fleet's mutual TLS; the voices are espeak-ng's, from both.
func TestCatalogWithWorkerBinaries(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	writePack(t, dirA, "bob", 320, 240, red)
	writePack(t, dirB, "zoe", 480, 640, blue)
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{
		{ID: "bin-a", SlotsPerGPU: 1, Args: []string{"--avatars", dirA, "--prewarm", "0"}},
		{ID: "bin-b", SlotsPerGPU: 2, Args: []string{"--avatars", dirB, "--prewarm", "0"}},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var avs apiv1.AvatarList
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/avatars", &avs); err != nil {
		t.Fatal(err)
	}
	want := []apiv1.Avatar{
		{Name: "bob", Workers: 1, Slots: 1, FreeSlots: 1, PreviewURL: f.URL + "/v1/avatars/bob/preview"},
		{Name: "default", Workers: 2, Slots: 3, FreeSlots: 3, PreviewURL: f.URL + "/v1/avatars/default/preview"},
		{Name: "zoe", Workers: 1, Slots: 2, FreeSlots: 2, PreviewURL: f.URL + "/v1/avatars/zoe/preview"},
	}
	if len(avs.Avatars) != len(want) {
		t.Fatalf("avatars %+v, want %+v", avs.Avatars, want)
	}
	for i := range want {
		if avs.Avatars[i] != want[i] {
			t.Errorf("avatar %d: %+v, want %+v", i, avs.Avatars[i], want[i])
		}
	}

	var vs apiv1.VoiceList
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/voices", &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs.Voices) < 2 || vs.Voices[0].Name > vs.Voices[len(vs.Voices)-1].Name {
		t.Fatalf("voices %+v", vs.Voices)
	}
	seenDefault := false
	for _, v := range vs.Voices {
		if v.Workers != 2 || len(v.Engines) != 1 || v.Engines[0] != "espeak" {
			t.Errorf("voice %+v: want both workers, engine espeak", v)
		}
		seenDefault = seenDefault || v.Name == "default"
	}
	if !seenDefault {
		t.Errorf("no default voice among %d", len(vs.Voices))
	}

	for _, tt := range []struct {
		name string
		size image.Point
		c    color.RGBA
	}{
		{"bob", image.Pt(256, 192), red},
		{"zoe", image.Pt(192, 256), blue},
		{"default", image.Pt(256, 256), color.RGBA{}},
	} {
		img := getPreview(ctx, t, f, tt.name)
		if img.Bounds().Size() != tt.size {
			t.Errorf("preview %s: %v, want %v", tt.name, img.Bounds().Size(), tt.size)
		}
		if tt.c.A == 0 {
			continue
		}
		r, g, b, _ := img.At(tt.size.X/2, tt.size.Y/2).RGBA()
		if d := absDiff(r>>8, tt.c.R) + absDiff(g>>8, tt.c.G) + absDiff(b>>8, tt.c.B); d > 24 {
			t.Errorf("preview %s: colour %d,%d,%d, want about %v", tt.name, r>>8, g>>8, b>>8, tt.c)
		}
	}
}

func getPreview(ctx context.Context, t *testing.T, f *binfleet.Fleet, name string) image.Image {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/v1/avatars/"+name+"/preview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("preview %s: %d %s (%v)", name, res.StatusCode, res.Header.Get("Content-Type"), err)
	}
	img, err := jpeg.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("preview %s: decode: %v", name, err)
	}
	return img
}

func absDiff(a uint32, b uint8) int { return max(int(a)-int(b), int(b)-int(a)) }
