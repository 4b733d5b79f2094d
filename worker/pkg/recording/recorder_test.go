package recording

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// keyframeData is the start of a 512×512 VP8 keyframe: enough for the
// muxer (these tests do not decode).
var keyframeData = []byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x02, 0x00, 0x02, 0xaa}

// feed writes n ticks of synthetic samples from tick `from`, with a
// keyframe every `gop` frames.
func feed(sink pipeline.Sink, from, n, gop int) {
	for i := from; i < from+n; i++ {
		ts := time.Duration(i) * pipeline.FrameDuration
		key := i%gop == 0
		data := []byte{0x51, byte(i), byte(i >> 8)}
		if key {
			data = keyframeData
		}
		_ = sink.WriteVideo(pipeline.Sample{Data: data, Duration: pipeline.FrameDuration, Timestamp: ts, Keyframe: key})
		for k := range 2 {
			at := ts + time.Duration(k)*pipeline.AudioFrameDuration
			_ = sink.WriteAudio(pipeline.Sample{Data: []byte{0xfc, byte(i), byte(k)}, Duration: pipeline.AudioFrameDuration, Timestamp: at})
		}
	}
}

func dirStore(t *testing.T) Store {
	t.Helper()
	st, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func readBack(t *testing.T, st Store, name string) []byte {
	t.Helper()
	rc, size, err := st.Open(context.Background(), name)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil || int64(len(b)) != size {
		t.Fatalf("read %d of %d bytes: %v", len(b), size, err)
	}
	return b
}

// TestStores records the same synthetic samples into each store and reads
// them back: the file starts at the first keyframe, and nothing is visible
// before Stop.
func TestStores(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(*testing.T) Store
		cues  bool
	}{
		{"dir", dirStore, true},
		{"s3", func(t *testing.T) Store { return startMinIO(t, 0) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store(t)
			var asked atomic.Int32
			rec, err := Start(context.Background(), Options{Store: st, Name: "s1/r1.webm", Queue: 1000, RequestKeyframe: func() { asked.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			if asked.Load() != 1 {
				t.Fatal("Start did not ask for a keyframe")
			}
			feed(rec, 3, 200, 50) // the first keyframe is frame 50
			if _, _, err := st.Open(context.Background(), "s1/r1.webm"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Open before Stop: %v, want ErrNotFound", err)
			}
			info, err := rec.Stop(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.VideoFrames != 153 || info.AudioPackets != 306 || info.Dropped != 3*47 || info.Duration != 153*pipeline.FrameDuration {
				t.Fatalf("info %+v", info)
			}
			f := parseWebM(t, bytes.NewReader(readBack(t, st, "s1/r1.webm")))
			if len(f.video) != 153 || !f.video[0].key || f.video[0].ts != 0 || f.video[152].ts != 152*40 || len(f.audio) != 306 {
				t.Fatalf("%d video blocks (first %+v), %d audio", len(f.video), f.video[0], len(f.audio))
			}
			if (f.cues > 0) != tc.cues {
				t.Fatalf("%d cue points, want cues: %v", f.cues, tc.cues)
			}
			if again, err := rec.Stop(context.Background()); err != nil || again.State != Stopped {
				t.Fatalf("second Stop: %+v %v", again, err)
			}
		})
	}
}

// TestLimits: a recording stops itself at its limit, keeping the file.
func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opt    Options
		frames uint64
	}{
		{"duration", Options{MaxDuration: time.Second, Queue: 1000}, 25},
		{"bytes", Options{MaxBytes: 2000, Queue: 1000}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not seekable (no seek index reserved up front).
			st := &slowStore{Store: dirStore(t), release: make(chan struct{})}
			close(st.release)
			opt := tc.opt
			opt.Store, opt.Name = st, "limit.webm"
			rec, err := Start(context.Background(), opt)
			if err != nil {
				t.Fatal(err)
			}
			feed(rec, 0, 250, 25)
			select {
			case <-rec.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the recording did not end at its limit")
			}
			info := rec.Info()
			if info.State != Stopped || !strings.Contains(info.Error, "limit") {
				t.Fatalf("info %+v", info)
			}
			if tc.frames > 0 && info.VideoFrames != tc.frames {
				t.Fatalf("%d frames, want %d", info.VideoFrames, tc.frames)
			}
			if tc.frames == 0 && (info.VideoFrames == 0 || info.VideoFrames >= 250) {
				t.Fatalf("%d frames: byte limit not applied", info.VideoFrames)
			}
			readBack(t, st, "limit.webm")
		})
	}
}

// slowStore's objects block every write until released, then fail after
// failAfter bytes if set.
type slowStore struct {
	Store
	release   chan struct{}
	failAfter int
	aborted   atomic.Bool
}

type slowObject struct {
	Object
	s *slowStore
	n int
}

func (s *slowStore) Create(ctx context.Context, name string) (Object, error) {
	o, err := s.Store.Create(ctx, name)
	return &slowObject{Object: o, s: s}, err
}

func (o *slowObject) Write(p []byte) (int, error) {
	<-o.s.release
	o.n += len(p)
	if o.s.failAfter > 0 && o.n > o.s.failAfter {
		return 0, errors.New("disk full")
	}
	return o.Object.Write(p)
}

func (o *slowObject) Abort() {
	o.s.aborted.Store(true)
	o.Object.Abort()
}

// TestOverflow: a store that falls behind never blocks the writer; the
// recording drops samples, asks for a keyframe and resumes at one.
func TestOverflow(t *testing.T) {
	st := &slowStore{Store: dirStore(t), release: make(chan struct{})}
	var asked atomic.Int32
	rec, err := Start(context.Background(), Options{Store: st, Name: "slow.webm", Queue: 8, RequestKeyframe: func() { asked.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		feed(rec, 0, 100, 10)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the recorder blocked its writer")
	}
	close(st.release)
	for len(rec.q) > 0 {
		time.Sleep(100 * time.Microsecond)
	}
	for i := range 100 { // at the store's pace now
		feed(rec, 100+i, 1, 10)
		for len(rec.q) > 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	info, err := rec.Stop(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Dropped == 0 || asked.Load() < 2 {
		t.Fatalf("info %+v, keyframe requests %d", info, asked.Load())
	}
	f := parseWebM(t, bytes.NewReader(readBack(t, st, "slow.webm")))
	for i := 1; i < len(f.video); i++ {
		if f.video[i].ts != f.video[i-1].ts+40 && !f.video[i].key {
			t.Fatalf("video resumes at %d ms without a keyframe", f.video[i].ts)
		}
	}
	if len(f.video) < 100 {
		var ts []int64
		for _, b := range f.video {
			ts = append(ts, b.ts)
		}
		t.Fatalf("%d video frames after the store caught up: %v", len(f.video), ts)
	}
}

// TestFailures: a store error or a recording with no keyframe fails the
// recording and commits nothing.
func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames int
		want   string
	}{
		{"store error", 100, "disk full"},
		{"no keyframe", 0, "no keyframe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &slowStore{Store: dirStore(t), release: make(chan struct{}), failAfter: 1000}
			close(st.release)
			rec, err := Start(context.Background(), Options{Store: st, Name: "f.webm"})
			if err != nil {
				t.Fatal(err)
			}
			feed(rec, 0, tc.frames, 25)
			info, err := rec.Stop(context.Background())
			if err == nil || info.State != Failed || !strings.Contains(info.Error, tc.want) {
				t.Fatalf("Stop: %+v, %v; want failed with %q", info, err, tc.want)
			}
			if !st.aborted.Load() {
				t.Fatal("the object was not aborted")
			}
			if _, _, err := st.Open(context.Background(), "f.webm"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Open: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestTee: samples reach the transport and every attached recorder; a
// removed one gets no more.
func TestTee(t *testing.T) {
	var mu sync.Mutex
	var got int
	tee := NewTee(sinkFunc(func() { mu.Lock(); got++; mu.Unlock() }))
	st := dirStore(t)
	a, err := Start(context.Background(), Options{Store: st, Name: "a.webm", Queue: 1000})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Start(context.Background(), Options{Store: st, Name: "b.webm", Queue: 1000})
	if err != nil {
		t.Fatal(err)
	}
	tee.Add(a)
	tee.Add(b)
	feed(tee, 0, 50, 25)
	tee.Remove(b)
	feed(tee, 50, 50, 25)
	ia, errA := a.Stop(context.Background())
	ib, errB := b.Stop(context.Background())
	if errA != nil || errB != nil || ia.VideoFrames != 100 || ib.VideoFrames != 50 || got != 300 {
		t.Fatalf("a %+v %v, b %+v %v, transport %d samples", ia, errA, ib, errB, got)
	}
}

type sinkFunc func()

func (f sinkFunc) WriteVideo(pipeline.Sample) error { f(); return nil }
func (f sinkFunc) WriteAudio(pipeline.Sample) error { f(); return nil }

func TestValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"name", ValidName("s1/r1.webm"), true},
		{"name 3 levels", ValidName("a/b/c"), false},
		{"name dot", ValidName("../x"), false},
		{"name empty", ValidName(""), false},
		{"s3 ok", (&S3Options{Endpoint: "http://127.0.0.1:9000", Bucket: "b"}).Validate(), true},
		{"s3 scheme", (&S3Options{Endpoint: "ftp://h", Bucket: "b"}).Validate(), false},
		{"s3 path", (&S3Options{Endpoint: "http://h/x", Bucket: "b"}).Validate(), false},
		{"s3 bucket", (&S3Options{Endpoint: "http://h"}).Validate(), false},
		{"s3 half key", (&S3Options{Endpoint: "http://h", Bucket: "b", AccessKey: "a"}).Validate(), false},
		{"s3 part", (&S3Options{Endpoint: "http://h", Bucket: "b", PartSize: 1}).Validate(), false},
		{"options store", (&Options{Name: "x"}).Validate(), false},
		{"options limit", (&Options{Store: &DirStore{}, Name: "x", MaxBytes: -1}).Validate(), false},
	} {
		if (tc.err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, tc.err, tc.ok)
		}
	}
	if _, err := NewDirStore(""); err == nil {
		t.Error("NewDirStore accepted an empty path")
	}
}

// TestS3Multipart: a recording larger than one part goes up as a multipart
// upload (three 5 MiB parts) and reads back block for block, with the seek
// index and the duration the muxer wrote into the held first part.
func TestS3Multipart(t *testing.T) {
	st := startMinIO(t, 5<<20)
	rec, err := Start(context.Background(), Options{Store: st, Name: "big.webm", Queue: 4000})
	if err != nil {
		t.Fatal(err)
	}
	const frames, size = 300, 48 << 10
	for i := range frames {
		data := bytes.Repeat([]byte{byte(i)}, size)
		key := i%50 == 0
		if key {
			data = append(bytes.Clone(keyframeData), data...)
		}
		ts := time.Duration(i) * pipeline.FrameDuration
		_ = rec.WriteVideo(pipeline.Sample{Data: data, Duration: pipeline.FrameDuration, Timestamp: ts, Keyframe: key})
		_ = rec.WriteAudio(pipeline.Sample{Data: []byte{0xfc, byte(i)}, Duration: pipeline.AudioFrameDuration, Timestamp: ts})
		for len(rec.q) > 100 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	info, err := rec.Stop(context.Background())
	if err != nil || info.VideoFrames != frames || info.Bytes < 3*(5<<20)-(1<<20) {
		t.Fatalf("Stop: %+v %v", info, err)
	}
	f := parseWebM(t, bytes.NewReader(readBack(t, st, "big.webm")))
	if len(f.video) != frames {
		t.Fatalf("%d video blocks, want %d", len(f.video), frames)
	}
	if f.cues == 0 || f.info.Duration != float64((frames-1)*40) {
		t.Fatalf("%d cue points, duration %v ms in the header; want cues and %d", f.cues, f.info.Duration, (frames-1)*40)
	}
	for i, b := range f.video {
		if len(b.data) < size || b.data[len(b.data)-1] != byte(i) {
			t.Fatalf("video block %d: %d bytes ending %d", i, len(b.data), b.data[len(b.data)-1])
		}
	}
}
