package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
)

// settle waits until the pipeline has sent every frame of the ticks given
// (the manual clock's last send returns while that tick still runs).
func (s *session) settle(t *testing.T, frames uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.p.Status().Frames < frames {
		if time.Now().After(deadline) {
			t.Fatalf("frames not sent: %d of %d", s.p.Status().Frames, frames)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRecordSession records a real session across idle (the shared idle
// loop), speech (the session's own encoder) and idle again, then reads the
// file back: every VP8 frame decodes with libvpx at 25 fps from a keyframe,
// every Opus packet decodes, speech is audible, the tracks line up, and
// ffmpeg agrees.
func TestRecordSession(t *testing.T) {
	s := startSession(t)
	sent := uint64(0)
	drive := func(n int) {
		s.tick(t, n)
		sent += uint64(n)
		// Tick n's samples are out once tick n+1 is taken: take one more
		// and wait for it, so the count is exact.
		s.settle(t, sent)
	}
	drive(30)
	dir, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Two recordings of the same samples at once: a directory and a
	// bucket of a real MinIO server.
	stores := []struct {
		name  string
		store Store
		rec   *Recorder
	}{{name: "dir", store: dir}, {name: "s3", store: startMinIO(t, 0)}}
	s.settle(t, sent)
	for i := range stores {
		rec, err := Start(context.Background(), Options{Store: stores[i].store, Name: "sess-1/rec-1.webm", RequestKeyframe: s.p.RequestKeyframe})
		if err != nil {
			t.Fatal(err)
		}
		stores[i].rec = rec
		s.tee.Add(rec)
	}
	st0 := s.p.Status()
	drive(50) // idle: the shared loop
	q := s.speak(t, "Hello there. This recording shows the avatar speaking to you.")
	drive(int(q/pipeline.FrameDuration) + pipeline.LatencyTicks + 10)
	drive(60) // idle again
	s.settle(t, sent)
	for _, x := range stores {
		s.tee.Remove(x.rec)
	}
	st1 := s.p.Status()
	recorded := st1.Frames - st0.Frames
	if st1.Inferred == st0.Inferred || st1.Shared-st0.Shared < 50 {
		t.Fatalf("the recording did not span idle and speech: %+v → %+v", st0, st1)
	}
	for _, x := range stores {
		t.Run(x.name, func(t *testing.T) { checkRecording(t, x.rec, x.store, recorded) })
	}
}

// checkRecording stops a recording of `recorded` frames and checks its
// file, then hands it to ffmpeg.
func checkRecording(t *testing.T, rec *Recorder, store Store, recorded uint64) {
	info, err := rec.Stop(context.Background())
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if info.State != Stopped || info.Error != "" || info.VideoFrames != recorded || info.AudioPackets != 2*recorded {
		t.Fatalf("info %+v, want %d frames and %d packets recorded", info, recorded, 2*recorded)
	}
	if want := time.Duration(recorded) * pipeline.FrameDuration; info.Duration != want {
		t.Fatalf("duration %v, want %v", info.Duration, want)
	}
	data := readBack(t, store, "sess-1/rec-1.webm")
	if int64(len(data)) != info.Bytes {
		t.Fatalf("file is %d bytes, info says %d", len(data), info.Bytes)
	}
	f := parseWebM(t, bytes.NewReader(data))
	seekable := true // both stores complete the header: seek index and duration
	checkTracks(t, f, seekable)
	checkTiming(t, f, int(recorded), info.Duration, seekable)
	decodeVideo(t, f.video, 512, 512)
	power := decodeAudio(t, f.audio)
	var loud int
	for _, p := range power {
		if p > 1e-4 { // −40 dBFS
			loud++
		}
	}
	if loud < 25 { // half a second of speech at least
		t.Fatalf("%d loud audio packets of %d: no speech in the recording", loud, len(power))
	}
	path := filepath.Join(t.TempDir(), "rec.webm")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	checkFFmpeg(t, path, int(recorded), info.Duration)
}

func checkTracks(t *testing.T, f *webmFile, seekable bool) {
	t.Helper()
	if len(f.tracks) != 2 || f.tracks[0].CodecID != "V_VP8" || f.tracks[1].CodecID != "A_OPUS" {
		t.Fatalf("tracks %+v", f.tracks)
	}
	if v := f.tracks[0].Video; v == nil || v.PixelWidth != 512 || v.PixelHeight != 512 {
		t.Fatalf("video track %+v", f.tracks[0].Video)
	}
	if a := f.tracks[1].Audio; a == nil || a.SamplingFrequency != 48000 || a.Channels != 1 || len(f.tracks[1].CodecPrivate) != 19 {
		t.Fatalf("audio track %+v", f.tracks[1])
	}
	if (f.cues > 0) != seekable {
		t.Fatalf("%d cue points; a seek index is written exactly when the store is seekable (%v)", f.cues, seekable)
	}
}

// checkTiming: the file starts with a keyframe at 0, video every 40 ms,
// audio every 20 ms from the same 0, and the duration in the header is the
// last block's time.
func checkTiming(t *testing.T, f *webmFile, frames int, d time.Duration, seekable bool) {
	t.Helper()
	if len(f.video) != frames || len(f.audio) != 2*frames {
		t.Fatalf("%d video and %d audio blocks, want %d and %d", len(f.video), len(f.audio), frames, 2*frames)
	}
	if !f.video[0].key {
		t.Fatal("the file does not start at a keyframe")
	}
	for i, b := range f.video {
		if b.ts != int64(i)*40 {
			t.Fatalf("video frame %d at %d ms, want %d", i, b.ts, i*40)
		}
	}
	for i, b := range f.audio {
		if b.ts != int64(i)*20 {
			t.Fatalf("audio packet %d at %d ms, want %d", i, b.ts, i*20)
		}
	}
	if !seekable {
		return // the duration is written back into the header
	}
	last := f.audio[len(f.audio)-1].ts
	if got := time.Duration(f.info.Duration * float64(time.Millisecond)); got != time.Duration(last)*time.Millisecond || d-got > 40*time.Millisecond {
		t.Fatalf("header duration %v, last block at %d ms, recorded %v", got, last, d)
	}
}

// checkFFmpeg probes and decodes the file with ffmpeg: 25 fps VP8 with
// Opus audio, every frame and packet decodes, the duration matches and the
// streams start within 40 ms of each other.
func checkFFmpeg(t *testing.T, path string, frames int, d time.Duration) {
	t.Helper()
	for _, tool := range []string{"ffprobe", "ffmpeg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: %v (scripts/setup.sh installs ffmpeg)", tool, err)
		}
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-of", "json",
		"-show_entries", "stream=codec_type,codec_name,width,height,r_frame_rate,nb_read_frames,start_time,sample_rate,channels:format=duration,format_name",
		path).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	var probe struct {
		Streams []struct {
			CodecType    string `json:"codec_type"`
			CodecName    string `json:"codec_name"`
			Width        int    `json:"width"`
			Height       int    `json:"height"`
			RFrameRate   string `json:"r_frame_rate"`
			NbReadFrames string `json:"nb_read_frames"`
			StartTime    string `json:"start_time"`
			SampleRate   string `json:"sample_rate"`
		} `json:"streams"`
		Format struct {
			Duration   string `json:"duration"`
			FormatName string `json:"format_name"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		t.Fatalf("ffprobe output %s: %v", out, err)
	}
	if len(probe.Streams) != 2 || !strings.Contains(probe.Format.FormatName, "webm") {
		t.Fatalf("ffprobe: %s", out)
	}
	v, a := probe.Streams[0], probe.Streams[1]
	if v.CodecType != "video" || v.CodecName != "vp8" || v.Width != 512 || v.Height != 512 || v.RFrameRate != "25/1" || v.NbReadFrames != strconv.Itoa(frames) {
		t.Errorf("video stream %+v, want vp8 512x512 at 25/1 with %d frames", v, frames)
	}
	if a.CodecType != "audio" || a.CodecName != "opus" || a.SampleRate != "48000" || a.NbReadFrames != strconv.Itoa(2*frames) {
		t.Errorf("audio stream %+v, want opus 48000 with %d packets", a, 2*frames)
	}
	secs := func(s string) float64 {
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("ffprobe number %q: %v", s, err)
		}
		return x
	}
	if off := math.Abs(secs(v.StartTime) - secs(a.StartTime)); off > 0.040 {
		t.Errorf("A/V start offset %.3f s > 40 ms", off)
	}
	// The duration: the header's where the file has one (a seekable
	// store), and always the end of the last packet of each stream.
	if probe.Format.Duration != "" {
		if got := secs(probe.Format.Duration); math.Abs(got-d.Seconds()) > 0.040 {
			t.Errorf("ffprobe duration %.3f s, recorded %.3f s", got, d.Seconds())
		}
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-of", "json", "-show_entries", "packet=stream_index,pts_time,duration_time", path).Output()
	if err != nil {
		t.Fatalf("ffprobe packets: %v", err)
	}
	var pk struct {
		Packets []struct {
			Stream   int    `json:"stream_index"`
			PTS      string `json:"pts_time"`
			Duration string `json:"duration_time"`
		} `json:"packets"`
	}
	if err := json.Unmarshal(out, &pk); err != nil {
		t.Fatalf("ffprobe packets: %v", err)
	}
	var end [2]float64
	for _, p := range pk.Packets {
		end[p.Stream] = max(end[p.Stream], secs(p.PTS)+secs(p.Duration))
	}
	if math.Abs(end[0]-d.Seconds()) > 0.040 || math.Abs(end[1]-d.Seconds()) > 0.040 {
		t.Errorf("streams end at %.3f s (video) and %.3f s (audio), recorded %.3f s", end[0], end[1], d.Seconds())
	}
	var stderr bytes.Buffer
	cmd := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", path, "-f", "null", "-")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("ffmpeg decode: %v: %s", err, stderr.String())
	}
	t.Logf("ffprobe: video %s frames at %s, audio %s packets, header duration %q s, streams end at %.3f/%.3f s, A/V start offset %s/%s s",
		v.NbReadFrames, v.RFrameRate, a.NbReadFrames, probe.Format.Duration, end[0], end[1], v.StartTime, a.StartTime)
}
