package codec

import (
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"

	"github.com/avatarfleet/avatarfleet/worker/pkg/codec/codectest"
)

// A sequence encoded as fast as the CPU allows comes out as a 25 fps
// stream: keyframes exactly where asked, every frame decodable with a Y
// PSNR above 30 dB, and the bytes near the target bitrate (not the seconds
// of budget per frame a wall-clock-stamped burst would get).
func TestVP8SequenceEncoder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n, key  int
		bitrate int
	}{{"default", 75, 25, 0}, {"low bitrate", 50, 50, 300_000}} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewVP8SequenceEncoder(VP8Options{Width: fw, Height: fh, Bitrate: tc.bitrate})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			pk := &codectest.Packets{}
			var srcs []*frame.I420
			total := 0
			for i := range tc.n {
				f, err := frame.New(fw, fh)
				if err != nil {
					t.Fatal(err)
				}
				talkingHead(f, i)
				srcs = append(srcs, f)
				want := i%tc.key == 0
				pkt, key, err := e.Encode(f, want)
				if err != nil {
					t.Fatal(err)
				}
				if key != want || IsVP8Keyframe(pkt) != want {
					t.Errorf("frame %d: keyframe %v (tag %v), want %v", i, key, IsVP8Keyframe(pkt), want)
				}
				total += len(pkt)
				pk.Push(pkt)
			}
			d := newVP8Decoder(t, pk)
			worst := 1e9
			for i, src := range srcs {
				img, release, err := d.Read()
				if err != nil {
					t.Fatalf("decode frame %d: %v", i, err)
				}
				worst = min(worst, yPSNR(t, img, src))
				release()
			}
			bitrate := tc.bitrate
			if bitrate == 0 {
				bitrate = DefaultVP8Bitrate
			}
			kbps := float64(total) * 8 * VP8FrameRate / float64(tc.n) / 1000
			t.Logf("%d frames, %.0f kbit/s (target %d), worst Y PSNR %.1f dB", tc.n, kbps, bitrate/1000, worst)
			if worst < 30 {
				t.Errorf("worst Y PSNR %.1f dB, want > 30", worst)
			}
			if kbps > 2*float64(bitrate)/1000 {
				t.Errorf("%.0f kbit/s, more than twice the %d kbit/s target", kbps, bitrate/1000)
			}
		})
	}
	if _, err := NewVP8SequenceEncoder(VP8Options{Width: 3, Height: 2}); err == nil {
		t.Error("odd width accepted")
	}
}

// The decoder the tests use refuses a stream that starts with a P-frame:
// the check that a session's output decodes can fail.
func TestVP8DecoderRefusesMissingReference(t *testing.T) {
	e, err := NewVP8SequenceEncoder(VP8Options{Width: fw, Height: fh})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	f, _ := frame.New(fw, fh)
	pk := &codectest.Packets{}
	for i := range 3 {
		talkingHead(f, i)
		pkt, _, err := e.Encode(f, i == 0)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			pk.Push(pkt)
		}
	}
	d := newVP8Decoder(t, pk)
	if img, release, err := d.Read(); err == nil {
		release()
		t.Errorf("a P-frame with no keyframe before it decoded to %v", img.Bounds())
	}
}
