package avatar

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"path/filepath"
	"testing"
)

// TestPreview: frame 0 scaled to fit maxSide (aspect kept; small packs
// keep their size), a JPEG under the byte limit whose colours are the
// frame's (area average of the test gradient).
func TestPreview(t *testing.T) {
	tests := []struct {
		w, h, maxSide int
		want          image.Point
	}{
		{64, 48, 256, image.Pt(64, 48)},
		{640, 480, 256, image.Pt(256, 192)},
		{480, 640, 256, image.Pt(192, 256)},
		{512, 512, 0, image.Pt(PreviewMaxSide, PreviewMaxSide)},
		{100, 50, 10, image.Pt(10, 5)},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%dx%d→%d", tt.w, tt.h, tt.maxSide), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "alice")
			m := fmt.Sprintf(`{"name": "alice", "version": 1, "width": %d, "height": %d, "fps": 25, "frames": 2, "face_boxes": [[0, 0, 16, 16]]}`, tt.w, tt.h)
			writePack(t, dir, m, 2, tt.w, tt.h)
			p, err := Load(dir, LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			data, r, err := p.Preview(tt.maxSide)
			if err != nil {
				t.Fatal(err)
			}
			if r.Size() != tt.want {
				t.Fatalf("size %v, want %v", r.Size(), tt.want)
			}
			if len(data) > PreviewMaxBytes {
				t.Fatalf("%d bytes", len(data))
			}
			img, err := jpeg.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if img.Bounds().Size() != tt.want {
				t.Fatalf("decoded size %v", img.Bounds())
			}
			// Area averaging keeps the picture's mean colour (JPEG moves
			// it a little).
			want, got := meanRGB(p.Image(0).ToRGBA()), meanRGB(img)
			for c := range 3 {
				if d := want[c] - got[c]; d > 4 || d < -4 {
					t.Errorf("mean colour %v, frame 0's %v", got, want)
					break
				}
			}
		})
	}
}

// TestDefaultPreview: the default avatar's preview is 256×256 and a few KB.
func TestDefaultPreview(t *testing.T) {
	data, r, err := defaultPack(t).Preview(0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dx() != 256 || r.Dy() != 256 || len(data) < 1000 || len(data) > 32<<10 {
		t.Fatalf("preview %v, %d bytes", r, len(data))
	}
	t.Logf("default preview: %v, %d bytes", r.Size(), len(data))
}

// meanRGB is the mean red, green and blue of img on 0..255.
func meanRGB(img image.Image) [3]float64 {
	var sum [3]float64
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			sum[0] += float64(r >> 8)
			sum[1] += float64(g >> 8)
			sum[2] += float64(bl >> 8)
		}
	}
	n := float64(b.Dx() * b.Dy())
	return [3]float64{sum[0] / n, sum[1] / n, sum[2] / n}
}
