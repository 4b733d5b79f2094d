package pipeline

import (
	"fmt"
	"image"
	"math"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/frame"
	"github.com/avatarfleet/avatarfleet/worker/pkg/idleloop"
)

// sharedKey is the shared loop's keyframe interval in these tests: short,
// so that a session joins the loop within a few frames.
const sharedKey = 10

func newLoop(t *testing.T, e *env) (*idleloop.Cache, *idleloop.Handle) {
	t.Helper()
	c, err := idleloop.New(idleloop.Options{KeyframeInterval: sharedKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	h := c.Acquire(e.pack, 0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, ok := h.Frame(0); ok {
			return c, h
		}
		if time.Now().After(deadline) {
			t.Fatalf("shared loop not ready: %+v", c.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// origin says where each video sample came from: the shared loop (true)
// or the session's own encoder, by the identity of its bytes.
func origin(h *idleloop.Handle, video []Sample, delay int) []bool {
	out := make([]bool, len(video))
	for n, s := range video {
		v := int64(n) - int64(delay)
		if d, _, ok := h.Frame(v); ok && v >= 0 && len(s.Data) > 0 && len(d) == len(s.Data) && &d[0] == &s.Data[0] {
			out[n] = true
		}
	}
	return out
}

// checkReferences checks that every P-frame of a session's stream comes
// right after a frame of the same encoder's stream: a shared P-frame after
// the shared frame of the tick before, an own P-frame after an own frame.
// A keyframe may follow anything; the stream starts with one.
func checkReferences(video []Sample, shared []bool) error {
	for n, s := range video {
		if s.Keyframe {
			continue
		}
		if n == 0 {
			return fmt.Errorf("frame 0 is not a keyframe")
		}
		if shared[n] != shared[n-1] {
			return fmt.Errorf("frame %d (shared %v) is a P-frame after a frame of the other stream (shared %v)", n, shared[n], shared[n-1])
		}
	}
	return nil
}

func lumaPSNR(img *image.YCbCr, ref *frame.I420) float64 {
	var se float64
	for y := range ref.Height() {
		for x := range ref.Width() {
			d := float64(img.Y[y*img.YStride+x]) - float64(ref.Y[y*ref.YStride+x])
			se += d * d
		}
	}
	if se == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255*float64(ref.Width()*ref.Height())/se)
}

// A session that idles, speaks, idles, is asked for a keyframe and idles
// again sends a stream that a real VP8 decoder decodes without an error,
// in which no P-frame follows a frame of another encoder's stream, whose
// idle frames decode to the avatar's idle frames, and which switches to
// the shared loop at its keyframes and back to its own encoder with a
// keyframe.
func TestSharedIdleSeamless(t *testing.T) {
	e := newEnv(t)
	_, loop := newLoop(t, e)
	h := e.start(t, func(o *Options) { o.IdleVideo = loop })
	var inferred []bool
	step := func(n int) {
		for range n {
			before := h.p.Status().Inferred
			h.tick(t, 1)
			inferred = append(inferred, h.p.Status().Inferred > before)
		}
	}
	step(3 * sharedKey)
	if h.p.Status().Shared == 0 {
		t.Fatalf("no shared frame after %d idle ticks: %+v", 3*sharedKey, h.p.Status())
	}
	if err := h.p.Speak("Hello there, this is speech.", false); err != nil {
		t.Fatal(err)
	}
	h.waitSynthesized(t)
	for range 400 {
		step(1)
		if st := h.p.Status(); st.Queued == 0 && !st.Speaking && st.Inferred > 0 {
			break
		}
	}
	step(3 * sharedKey)
	h.p.RequestKeyframe()
	step(3 * sharedKey)

	video, _ := h.sink.samples()
	shared := origin(loop, video, h.d)
	if err := checkReferences(video, shared); err != nil {
		t.Fatal(err)
	}
	st := h.p.Status()
	if st.Shared != uint64(count(shared)) {
		t.Errorf("Status.Shared %d, %d samples are the loop's", st.Shared, count(shared))
	}
	if st.Inferred == 0 {
		t.Fatal("no frame was inferred: the speech was not spoken")
	}
	joins, leaves := 0, 0
	for n := 1; n < len(video); n++ {
		switch {
		case shared[n] && !shared[n-1]:
			joins++
			if !video[n].Keyframe {
				t.Errorf("frame %d joins the shared loop with a P-frame", n)
			}
		case !shared[n] && shared[n-1]:
			leaves++
			if !video[n].Keyframe {
				t.Errorf("frame %d leaves the shared loop without a keyframe", n)
			}
		}
		if inferred[n] && shared[n] {
			t.Errorf("frame %d was inferred but sent from the shared loop", n)
		}
	}
	// Joined at start, after the speech and after the keyframe request;
	// left for the speech and for the keyframe request.
	if joins < 3 || leaves < 2 {
		t.Errorf("%d joins and %d leaves of the shared loop, want ≥ 3 and ≥ 2", joins, leaves)
	}
	// The keyframe request, made while on the shared loop, is answered at
	// once, by the own encoder.
	if n := len(video) - 3*sharedKey; !shared[n-1] {
		t.Errorf("frame %d, before the keyframe request, is not shared", n-1)
	} else if !video[n].Keyframe {
		t.Errorf("frame %d after the keyframe request is not a keyframe", n)
	}
	decoded := decodeAll(t, video, e.pack.Width(), e.pack.Height())
	worst := math.Inf(1)
	for n, img := range decoded {
		if inferred[n] {
			continue
		}
		ref, _ := e.pack.Frame(n - h.d)
		p := lumaPSNR(img, ref)
		worst = min(worst, p)
		if p < 30 {
			t.Errorf("idle frame %d (shared %v, key %v) decodes %.1f dB from the idle image", n, shared[n], video[n].Keyframe, p)
		}
	}
	t.Logf("%d frames: %d shared, %d inferred, %d keyframes, %d joins, %d leaves; idle frames ≥ %.1f dB",
		len(video), st.Shared, st.Inferred, st.Keyframes, joins, leaves, worst)

	// The check can fail: an own P-frame spliced after a shared frame.
	for n := 1; n < len(video); n++ {
		if shared[n-1] && !shared[n] {
			bad := append([]Sample(nil), video[:n]...)
			bad = append(bad, video[n+1]) // a P-frame of the own stream
			if video[n+1].Keyframe || shared[n+1] {
				continue
			}
			sh := append(append([]bool(nil), shared[:n]...), false)
			if checkReferences(bad, sh) == nil {
				t.Error("checkReferences accepted a P-frame after the other stream's frame")
			}
			break
		}
	}
}

func count(b []bool) int {
	n := 0
	for _, x := range b {
		if x {
			n++
		}
	}
	return n
}
