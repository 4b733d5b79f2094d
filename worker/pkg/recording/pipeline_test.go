package recording

import (
	"context"
	"image"
	"io"
	"testing"
	"time"

	"github.com/at-wat/ebml-go"
	"github.com/at-wat/ebml-go/webm"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"gopkg.in/hraban/opus.v2"

	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/codec/codectest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/idleloop"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference/inferencetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/lipsync"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// discard is the viewers' side of the tee in these tests.
type discard struct{}

func (discard) WriteVideo(pipeline.Sample) error { return nil }
func (discard) WriteAudio(pipeline.Sample) error { return nil }

// session is a real pipeline (default avatar, generated default model,
// espeak-ng, the shared idle loop) on a manual clock, writing to a Tee.
type session struct {
	p     *pipeline.Pipeline
	tee   *Tee
	clock *pipeline.ManualClock
	done  chan error
	idle  *idleloop.Handle
}

func startSession(t *testing.T) *session {
	t.Helper()
	pack, err := avatar.Default()
	if err != nil {
		t.Fatal(err)
	}
	m := inferencetest.Default(t)
	c, err := lipsync.NewONNX(m, inference.ContextOptions{Batch: 1, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	es, err := tts.NewEspeak(context.Background(), tts.EspeakOptions{})
	if err != nil {
		t.Fatalf("espeak-ng: %v (run scripts/setup.sh first)", err)
	}
	cache, err := idleloop.New(idleloop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	s := &session{tee: NewTee(discard{}), clock: pipeline.NewManualClock(), done: make(chan error, 1)}
	s.idle = cache.Acquire(pack, 0)
	deadline := time.Now().Add(2 * time.Minute)
	for _, _, ok := s.idle.Frame(0); !ok; _, _, ok = s.idle.Frame(0) {
		if time.Now().After(deadline) {
			t.Fatal("shared idle loop not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p, err := pipeline.New(pipeline.Options{Avatar: pack, Model: c, TTS: es, Sink: s.tee, Clock: s.clock, IdleVideo: s.idle})
	if err != nil {
		_ = c.Close()
		t.Fatal(err)
	}
	s.p = p
	ctx, cancel := context.WithCancel(context.Background())
	go func() { s.done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-s.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// tick drives n ticks of the media clock.
func (s *session) tick(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case s.clock.Ticks() <- time.Time{}:
		case err := <-s.done:
			t.Fatalf("Run ended: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("tick not taken")
		}
	}
	// The tick after the last one is taken once the last one's samples
	// are out: send one more only where needed by the caller.
}

// speak queues text and waits for its synthesis.
func (s *session) speak(t *testing.T, text string) time.Duration {
	t.Helper()
	if err := s.p.Speak(text, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := s.p.Status()
		if !st.Synthesizing && st.Queued > 0 {
			return st.Queued
		}
		if time.Now().After(deadline) {
			t.Fatalf("synthesis did not finish: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// webmFile is a parsed recording.
type webmFile struct {
	info   webm.Info
	tracks []webm.TrackEntry
	video  []block
	audio  []block
	cues   int
}

type block struct {
	ts   int64 // ms from the file's start
	key  bool
	data []byte
}

// parseWebM reads a whole file with ebml-go's unmarshaller.
func parseWebM(t *testing.T, r io.Reader) *webmFile {
	t.Helper()
	var doc struct {
		Header  webm.EBMLHeader `ebml:"EBML"`
		Segment webm.Segment    `ebml:"Segment"`
	}
	if err := ebml.Unmarshal(r, &doc); err != nil {
		t.Fatalf("parse WebM: %v", err)
	}
	if doc.Header.DocType != "webm" {
		t.Fatalf("doc type %q", doc.Header.DocType)
	}
	f := &webmFile{info: doc.Segment.Info, tracks: doc.Segment.Tracks.TrackEntry}
	if doc.Segment.Cues != nil {
		f.cues = len(doc.Segment.Cues.CuePoint)
	}
	for _, c := range doc.Segment.Cluster {
		for _, b := range c.SimpleBlock {
			if len(b.Data) != 1 {
				t.Fatalf("block with %d frames (laced)", len(b.Data))
			}
			x := block{ts: int64(c.Timecode) + int64(b.Timecode), key: b.Keyframe, data: b.Data[0]}
			switch b.TrackNumber {
			case videoTrack:
				f.video = append(f.video, x)
			case audioTrack:
				f.audio = append(f.audio, x)
			default:
				t.Fatalf("block of track %d", b.TrackNumber)
			}
		}
	}
	return f
}

// decodeVideo decodes every VP8 frame with libvpx; every one must decode
// to a w×h picture.
func decodeVideo(t *testing.T, blocks []block, w, h int) []*image.YCbCr {
	t.Helper()
	frames := make([][]byte, len(blocks))
	for i, b := range blocks {
		frames[i] = b.data
	}
	return codectest.DecodeVP8(t, frames, w, h)
}

// decodeAudio decodes every Opus packet; it returns each packet's RMS.
func decodeAudio(t *testing.T, blocks []block) []float64 {
	t.Helper()
	d, err := opus.NewDecoder(48000, 1)
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]float32, 48000/50*3)
	out := make([]float64, 0, len(blocks))
	for i, b := range blocks {
		n, err := d.DecodeFloat32(b.data, pcm)
		if err != nil {
			t.Fatalf("decode audio packet %d (%d ms): %v", i, b.ts, err)
		}
		if n != 960 {
			t.Fatalf("audio packet %d: %d samples, want 960 (20 ms)", i, n)
		}
		var sum float64
		for _, x := range pcm[:n] {
			sum += float64(x) * float64(x)
		}
		out = append(out, sum/float64(n))
	}
	return out
}
