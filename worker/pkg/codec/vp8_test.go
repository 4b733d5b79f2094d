package codec

import (
	"errors"
	"image"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"

	"github.com/avatarfleet/avatarfleet/worker/pkg/codec/codectest"
)

func newVP8(t testing.TB, opts VP8Options) *VP8Encoder {
	t.Helper()
	if opts.Width == 0 {
		opts.Width, opts.Height = fw, fh
	}
	e, err := NewVP8Encoder(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// encodePaced encodes n frames drawn by draw at 25 fps, as a session does,
// and returns the source frames and the packets.
func encodePaced(t *testing.T, e *VP8Encoder, n int, draw func(*frame.I420, int)) ([]*frame.I420, *codectest.Packets, int) {
	t.Helper()
	tick := time.NewTicker(time.Second / VP8FrameRate)
	defer tick.Stop()
	var srcs []*frame.I420
	pk := &codectest.Packets{}
	bytes := 0
	for i := 0; i < n; i++ {
		f, err := frame.New(fw, fh)
		if err != nil {
			t.Fatal(err)
		}
		draw(f, i)
		srcs = append(srcs, f)
		<-tick.C
		pkt, key, err := e.Encode(f)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(pkt) == 0 {
			t.Fatalf("frame %d dropped", i)
		}
		if want := i == 0; key != want {
			t.Errorf("frame %d: keyframe %v, want %v", i, key, want)
		}
		bytes += len(pkt)
		pk.Push(pkt)
	}
	return srcs, pk, bytes
}

// Fifty frames of a moving talking head survive encode and decode with a Y
// PSNR above 30 dB each.
func TestVP8RoundTrip(t *testing.T) {
	e := newVP8(t, VP8Options{})
	srcs, pk, n := encodePaced(t, e, 50, talkingHead)
	d := newVP8Decoder(t, pk)
	worst, sum := 1e9, 0.0
	for i, src := range srcs {
		img, release, err := d.Read()
		if err != nil {
			t.Fatalf("decode frame %d: %v", i, err)
		}
		p := yPSNR(t, img, src)
		release()
		worst, sum = min(worst, p), sum+p
	}
	t.Logf("50 frames, %d bytes (%.0f kbit/s at 25 fps), Y PSNR mean %.1f dB, worst %.1f dB",
		n, float64(n)*8/2/1000, sum/50, worst)
	if worst < 30 {
		t.Errorf("worst Y PSNR %.1f dB, want > 30", worst)
	}
}

// On content that needs every bit it can get, the stream stays near the
// target bitrate and still decodes.
func TestVP8Bitrate(t *testing.T) {
	const target = 1_000_000
	e := newVP8(t, VP8Options{Bitrate: target})
	srcs, pk, n := encodePaced(t, e, 50, fullMotion)
	rate := float64(n) * 8 / 2 // 50 frames = 2 s
	d := newVP8Decoder(t, pk)
	sum := 0.0
	for i, src := range srcs {
		img, release, err := d.Read()
		if err != nil {
			t.Fatalf("decode frame %d: %v", i, err)
		}
		sum += yPSNR(t, img, src)
		release()
	}
	t.Logf("full motion at %d bit/s: %.0f bit/s, Y PSNR mean %.1f dB", target, rate, sum/50)
	if rate < 0.5*target || rate > 1.5*target {
		t.Errorf("bitrate %.0f, want within 0.5..1.5 of %d", rate, target)
	}
}

func TestVP8ForceKeyframe(t *testing.T) {
	e := newVP8(t, VP8Options{})
	f, _ := frame.New(fw, fh)
	var keys []bool
	for i := 0; i < 8; i++ {
		if i == 4 {
			e.ForceKeyframe()
		}
		talkingHead(f, i)
		_, key, err := e.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	want := []bool{true, false, false, false, true, false, false, false}
	for i := range want {
		if keys[i] != want[i] {
			t.Fatalf("keyframes %v, want %v", keys, want)
		}
	}
}

// ForceKeyframe and SetBitrate may come from another goroutine (an RTCP
// handler) while frames are encoded.
func TestVP8ConcurrentControl(t *testing.T) {
	e := newVP8(t, VP8Options{Width: 128, Height: 96})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			e.ForceKeyframe()
			if err := e.SetBitrate(200_000 + 10_000*i); err != nil {
				t.Error(err)
			}
		}
	}()
	f, _ := frame.New(128, 96)
	for i := 0; i < 20; i++ {
		f.Fill(uint8(16+5*i), 128, 128)
		if _, _, err := e.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}

func TestVP8KeyframeInterval(t *testing.T) {
	e := newVP8(t, VP8Options{KeyframeInterval: 10})
	f, _ := frame.New(fw, fh)
	last := -1
	for i := 0; i < 35; i++ {
		talkingHead(f, i)
		_, key, err := e.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		if key {
			last = i
		}
		if i-last >= 10 {
			t.Fatalf("no keyframe in the 10 frames up to %d", i)
		}
	}
}

func TestVP8Errors(t *testing.T) {
	for _, o := range []VP8Options{
		{Width: 0, Height: 2}, {Width: 3, Height: 2}, {Width: 2, Height: frame.MaxDim + 2},
		{Width: 16, Height: 16, Bitrate: 5},
		{Width: 16, Height: 16, KeyframeInterval: -1},
		{Width: 16, Height: 16, Speed: 17},
	} {
		if e, err := NewVP8Encoder(o); err == nil {
			_ = e.Close()
			t.Errorf("%+v accepted", o)
		}
	}
	e := newVP8(t, VP8Options{Width: 64, Height: 48})
	big, _ := frame.New(64, 64)
	if _, _, err := e.Encode(big); err == nil {
		t.Error("frame of the wrong size encoded")
	}
	if err := e.SetBitrate(1); err == nil {
		t.Error("bitrate 1 accepted")
	}
	if err := e.SetBitrate(300_000); err != nil {
		t.Error(err)
	}
	f, _ := frame.New(64, 48)
	if pkt, key, err := e.Encode(f); err != nil || !key || len(pkt) == 0 {
		t.Errorf("64x48 frame: %d bytes, key %v, %v", len(pkt), key, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, _, err := e.Encode(f); !errors.Is(err, ErrClosed) {
		t.Errorf("encode after close: %v", err)
	}
}

func TestIsVP8Keyframe(t *testing.T) {
	if IsVP8Keyframe(nil) || IsVP8Keyframe([]byte{0x00}) || IsVP8Keyframe([]byte{0x01, 0, 0}) {
		t.Error("non-keyframes reported as keyframes")
	}
	if !IsVP8Keyframe([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a}) {
		t.Error("keyframe tag not recognised")
	}
}

// benchVP8 encodes 512×512 frames one after another. Frames are stamped on
// the encoder's own media clock, so a burst is budgeted like paced frames;
// with gap > 0 it waits that long (timer stopped) before each frame, as a
// session does between its frames (the caches go cold meanwhile).
func benchVP8(b *testing.B, frames []*frame.I420, gap time.Duration, focus image.Rectangle) {
	e := newVP8(b, VP8Options{Focus: focus})
	var bytes int
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if gap > 0 {
			b.StopTimer()
			time.Sleep(gap)
			b.StartTimer()
		}
		pkt, _, err := e.Encode(frames[i%len(frames)])
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(pkt)
	}
	b.ReportMetric(float64(bytes)*8*VP8FrameRate/float64(b.N)/1000, "kbit/s")
}

// drawn returns 50 frames drawn by draw.
func drawn(b *testing.B, draw func(*frame.I420, int)) []*frame.I420 {
	frames := make([]*frame.I420, 50)
	for i := range frames {
		frames[i], _ = frame.New(fw, fh)
		draw(frames[i], i)
	}
	return frames
}

// avatarSpeaking returns 100 frames of the default avatar's idle loop with
// a mouth-like patch that changes every frame: what a speaking session
// encodes.
func avatarSpeaking(b testing.TB) []*frame.I420 {
	pack, err := avatar.Default()
	if err != nil {
		b.Fatal(err)
	}
	out := make([]*frame.I420, 100)
	for i := range out {
		src, box := pack.Frame(i)
		f, _ := frame.New(src.Width(), src.Height())
		f.CopyFrom(src)
		y0, x0, x1 := box.Min.Y+box.Dy()*2/3, box.Min.X+box.Dx()/3, box.Max.X-box.Dx()/3
		for y := y0; y < y0+10+(i*7)%30; y++ {
			for x := x0; x < x1; x++ {
				f.Y[y*f.YStride+x] = uint8(40 + (x*y+i)%20)
			}
		}
		out[i] = f
	}
	return out
}

// BenchmarkVP8Encode512: the speaking default avatar with and without its
// face as the region of interest, paced as a session is and back to back;
// synthetic talking-head and full-motion frames.
func BenchmarkVP8Encode512(b *testing.B) {
	pack, err := avatar.Default()
	if err != nil {
		b.Fatal(err)
	}
	face := pack.Box(0)
	b.Run("avatar/focus/paced", func(b *testing.B) { benchVP8(b, avatarSpeaking(b), 30*time.Millisecond, face) })
	b.Run("avatar/focus/burst", func(b *testing.B) { benchVP8(b, avatarSpeaking(b), 0, face) })
	b.Run("avatar/whole/paced", func(b *testing.B) { benchVP8(b, avatarSpeaking(b), 30*time.Millisecond, image.Rectangle{}) })
	b.Run("avatar/whole/burst", func(b *testing.B) { benchVP8(b, avatarSpeaking(b), 0, image.Rectangle{}) })
	b.Run("talking/burst", func(b *testing.B) { benchVP8(b, drawn(b, talkingHead), 0, image.Rectangle{}) })
	b.Run("fullmotion/burst", func(b *testing.B) { benchVP8(b, drawn(b, fullMotion), 0, image.Rectangle{}) })
}

// The default avatar's idle loop (the real picture a session sends most of
// the time), encoded paced at the default bitrate and speed and decoded by
// libvpx, keeps a luma PSNR well above what a talking head needs: a faster
// encoder setting must not silently ruin the picture.
func TestVP8AvatarQuality(t *testing.T) {
	pack, err := avatar.Default()
	if err != nil {
		t.Fatal(err)
	}
	if pack.Width() != fw || pack.Height() != fh {
		t.Fatalf("default avatar is %dx%d, want %dx%d", pack.Width(), pack.Height(), fw, fh)
	}
	e := newVP8(t, VP8Options{})
	srcs, pk, n := encodePaced(t, e, 50, func(f *frame.I420, i int) {
		src, _ := pack.Frame(i)
		copy(f.Y, src.Y)
		copy(f.Cb, src.Cb)
		copy(f.Cr, src.Cr)
	})
	d := newVP8Decoder(t, pk)
	worst, sum := 1e9, 0.0
	for i, src := range srcs {
		img, release, err := d.Read()
		if err != nil {
			t.Fatalf("decode frame %d: %v", i, err)
		}
		p := min(yPSNR(t, img, src), 99)
		release()
		worst, sum = min(worst, p), sum+p
	}
	mean := sum / float64(len(srcs))
	t.Logf("default avatar, 50 frames: %.0f kbit/s at 25 fps, Y PSNR mean %.1f dB, worst %.1f dB",
		float64(n)*8/2/1000, mean, worst)
	if worst < 32 || mean < 38 {
		t.Errorf("Y PSNR mean %.1f dB, worst %.1f dB; want mean ≥ 38, worst ≥ 32", mean, worst)
	}
}
