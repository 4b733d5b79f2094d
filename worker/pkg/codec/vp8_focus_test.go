package codec

import (
	"bytes"
	"errors"
	"image"
	"math"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"

	"github.com/avatarfleet/avatarfleet/worker/pkg/codec/codectest"
)

// regionPSNR is the luma PSNR of img against f inside r (or outside it).
func regionPSNR(t testing.TB, img image.Image, f *frame.I420, r image.Rectangle, inside bool) float64 {
	t.Helper()
	y, ok := img.(*image.YCbCr)
	if !ok {
		t.Fatalf("decoded %T", img)
	}
	var se float64
	n := 0
	for row := 0; row < f.Height(); row++ {
		for c := 0; c < f.Width(); c++ {
			if image.Pt(c, row).In(r) != inside {
				continue
			}
			d := float64(y.Y[row*y.YStride+c]) - float64(f.Y[row*f.YStride+c])
			se += d * d
			n++
		}
	}
	return 10 * math.Log10(255*255/(se/float64(n)+1e-9))
}

type focusRun struct {
	bytes    int
	face, bg float64 // mean luma PSNR
	pkts     [][]byte
}

// encodeFocused encodes the speaking default avatar's frames as a sequence
// (keyframe every 50) with focus set before frame k to focusAt(k), decodes
// them and measures.
func encodeFocused(t *testing.T, frames []*frame.I420, face image.Rectangle, opts VP8Options, focusAt func(k int) (image.Rectangle, bool)) focusRun {
	t.Helper()
	opts.Width, opts.Height = fw, fh
	e, err := NewVP8SequenceEncoder(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var run focusRun
	pk := &codectest.Packets{}
	for i, f := range frames {
		if r, ok := focusAt(i); ok {
			if err := e.SetFocus(r); err != nil {
				t.Fatal(err)
			}
		}
		pkt, _, err := e.Encode(f, i%50 == 0)
		if err != nil {
			t.Fatal(err)
		}
		run.bytes += len(pkt)
		run.pkts = append(run.pkts, pkt)
		pk.Push(pkt)
	}
	d := newVP8Decoder(t, pk)
	for i, f := range frames {
		img, release, err := d.Read()
		if err != nil {
			t.Fatalf("decode frame %d: %v", i, err)
		}
		run.face += regionPSNR(t, img, f, face, true) / float64(len(frames))
		run.bg += regionPSNR(t, img, f, face, false) / float64(len(frames))
		release()
	}
	return run
}

// With the face as the region of interest, the background is coded less
// often: fewer bytes, the face at least as good, the background still well
// above what a backdrop needs.
func TestVP8Focus(t *testing.T) {
	pack, err := avatar.Default()
	if err != nil {
		t.Fatal(err)
	}
	face := pack.Box(0)
	frames := avatarSpeaking(t)
	never := func(int) (image.Rectangle, bool) { return image.Rectangle{}, false }
	plain := encodeFocused(t, frames, face, VP8Options{}, never)
	focused := encodeFocused(t, frames, face, VP8Options{Focus: face}, never)
	t.Logf("no focus: %d bytes, face %.1f dB, background %.1f dB", plain.bytes, plain.face, plain.bg)
	t.Logf("focus:    %d bytes, face %.1f dB, background %.1f dB", focused.bytes, focused.face, focused.bg)
	if focused.bytes >= plain.bytes*95/100 {
		t.Errorf("focus took %d bytes, no focus %d: the background was not skipped", focused.bytes, plain.bytes)
	}
	if focused.face < plain.face-0.5 {
		t.Errorf("face PSNR %.1f dB with focus, %.1f without", focused.face, plain.face)
	}
	if focused.bg < 38 {
		t.Errorf("background PSNR %.1f dB with focus, want ≥ 38", focused.bg)
	}

	// Clearing the region before the first frame codes the frame as one
	// segment again: as many bytes as with no region, give or take the
	// segment map, and the same picture. A region never set leaves the
	// stream as it was, byte for byte (libvpx with one thread is
	// deterministic).
	cleared := encodeFocused(t, frames, face, VP8Options{Focus: face}, func(k int) (image.Rectangle, bool) {
		return image.Rectangle{}, k == 0
	})
	t.Logf("cleared:  %d bytes, face %.1f dB, background %.1f dB", cleared.bytes, cleared.face, cleared.bg)
	if d := float64(cleared.bytes)/float64(plain.bytes) - 1; math.Abs(d) > 0.03 || math.Abs(cleared.face-plain.face) > 0.3 || math.Abs(cleared.bg-plain.bg) > 0.3 {
		t.Errorf("cleared region: %d bytes, %.1f/%.1f dB; no region: %d bytes, %.1f/%.1f dB", cleared.bytes, cleared.face, cleared.bg, plain.bytes, plain.face, plain.bg)
	}
	again := encodeFocused(t, frames, face, VP8Options{}, func(k int) (image.Rectangle, bool) {
		return image.Rectangle{}, true
	})
	for i := range plain.pkts {
		if !bytes.Equal(again.pkts[i], plain.pkts[i]) {
			t.Fatalf("frame %d differs with an empty region set on every frame", i)
		}
	}
	// Moving it mid-stream (every 10 frames, some boxes off the frame's
	// edge) keeps every frame decodable.
	moving := encodeFocused(t, frames, face, VP8Options{}, func(k int) (image.Rectangle, bool) {
		return face.Add(image.Pt(60*(k/10%3)-60, 40*(k/10%4)-40)), k%10 == 0
	})
	t.Logf("moving:   %d bytes, face %.1f dB, background %.1f dB", moving.bytes, moving.face, moving.bg)
}

func TestVP8FocusErrors(t *testing.T) {
	e := newVP8(t, VP8Options{Width: 64, Height: 48, Focus: image.Rect(-100, -100, 1000, 1000)})
	f, _ := frame.New(64, 48)
	if _, _, err := e.Encode(f); err != nil {
		t.Fatal(err)
	}
	if err := e.SetFocus(image.Rect(5000, 5000, 6000, 6000)); err != nil {
		t.Errorf("a region off the frame: %v (want it cleared)", err)
	}
	if _, _, err := e.Encode(f); err != nil {
		t.Fatal(err)
	}
	_ = e.Close()
	if err := e.SetFocus(image.Rect(0, 0, 16, 16)); !errors.Is(err, ErrClosed) {
		t.Errorf("SetFocus after Close: %v", err)
	}
}
