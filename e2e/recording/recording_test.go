package recording

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
)

// TestRecordingOverREST: POST starts a recording of a speaking session, the
// Session lists it, GET refuses it while it runs, DELETE stops it (with its
// duration and size), GET downloads a WebM that ffmpeg decodes at 25 fps
// with audio, as long as reported, the streams starting together; the
// file is also where the worker's --recordings-dir says.
func TestRecordingOverREST(t *testing.T) {
	dir := t.TempDir()
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{Args: []string{"--recordings-dir", dir, "--prewarm", "1"}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	f.WaitUntil(t, "session ready", time.Minute, func() error {
		got, err := f.GetSession(ctx, s.ID)
		if err == nil && got.State != "ready" {
			err = fmt.Errorf("state %s", got.State)
		}
		return err
	})
	recs := f.URL + "/v1/sessions/" + s.ID + "/recordings"
	var rec apiv1.Recording
	if err := binfleet.Call(ctx, http.MethodPost, recs, f.APIKey, "", nil, http.StatusCreated, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.State != apiv1.RecordingRecording || !strings.HasPrefix(rec.ID, "rec_") || rec.WorkerID != f.WorkerIDs[0] {
		t.Fatalf("started %+v", rec)
	}
	speak, _ := json.Marshal(apiv1.SpeakRequest{Text: "Hello. This session is being recorded, with its voice and its lips."})
	if err := binfleet.Call(ctx, http.MethodPost, f.URL+"/v1/sessions/"+s.ID+"/speak", f.APIKey, "application/json", speak, http.StatusAccepted, nil); err != nil {
		t.Fatal(err)
	}
	got, err := f.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Recordings) != 1 || got.Recordings[0].ID != rec.ID || got.Recordings[0].State != apiv1.RecordingRecording {
		t.Fatalf("session lists %+v", got.Recordings)
	}
	if err := binfleet.Call(ctx, http.MethodGet, recs+"/"+rec.ID, f.APIKey, "", nil, http.StatusConflict, nil); err != nil {
		t.Fatalf("GET while recording: %v", err)
	}
	time.Sleep(6 * time.Second) // the speech, in real time
	var stopped apiv1.Recording
	if err := binfleet.Call(ctx, http.MethodDelete, recs+"/"+rec.ID, f.APIKey, "", nil, http.StatusOK, &stopped); err != nil {
		t.Fatal(err)
	}
	if stopped.State != apiv1.RecordingStopped || stopped.StoppedAt == nil || stopped.Bytes < 10_000 || stopped.DurationSeconds < 5 {
		t.Fatalf("stopped %+v", stopped)
	}
	if got, err = f.GetSession(ctx, s.ID); err != nil || len(got.Recordings) != 1 || got.Recordings[0].State != apiv1.RecordingStopped {
		t.Fatalf("session lists %+v (%v)", got.Recordings, err)
	}
	// Stopping again answers the same recording.
	var again apiv1.Recording
	if err := binfleet.Call(ctx, http.MethodDelete, recs+"/"+rec.ID, f.APIKey, "", nil, http.StatusOK, &again); err != nil || again.Bytes != stopped.Bytes {
		t.Fatalf("second DELETE: %+v %v", again, err)
	}
	for _, path := range []string{"/rec_missing", "/..%2Fx"} {
		if err := binfleet.Call(ctx, http.MethodGet, recs+path, f.APIKey, "", nil, http.StatusNotFound, nil); err != nil {
			t.Error(err)
		}
	}
	if err := binfleet.Call(ctx, http.MethodPost, recs, "", "", nil, http.StatusUnauthorized, nil); err != nil {
		t.Error(err)
	}

	file := filepath.Join(t.TempDir(), "rec.webm")
	n := download(ctx, t, recs+"/"+rec.ID, f.APIKey, file)
	if n != stopped.Bytes {
		t.Fatalf("downloaded %d bytes, the recording says %d", n, stopped.Bytes)
	}
	onDisk := filepath.Join(dir, s.ID, rec.ID+".webm")
	if st, err := os.Stat(onDisk); err != nil || st.Size() != n || !strings.HasSuffix(stopped.Location, onDisk) {
		t.Fatalf("the worker's file %s: %v (location %q)", onDisk, err, stopped.Location)
	}
	probe(t, file, stopped.DurationSeconds)

	// A recording still running when its session ends is finished by the
	// worker, which writes its final state into the session's record: the
	// session lists it stopped without anyone asking for it.
	var second apiv1.Recording
	if err := binfleet.Call(ctx, http.MethodPost, recs, f.APIKey, "", nil, http.StatusCreated, &second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := f.DeleteSession(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	f.WaitUntil(t, "the ended session's recording listed as stopped", 30*time.Second, func() error {
		got, err := f.GetSession(ctx, s.ID)
		if err != nil || got.State != "ended" || len(got.Recordings) != 2 {
			return fmt.Errorf("session %s with %d recordings: %v", got.State, len(got.Recordings), err)
		}
		if r := got.Recordings[1]; r.State != apiv1.RecordingStopped || r.Bytes == 0 || r.DurationSeconds < 1 {
			return fmt.Errorf("second recording %+v", r)
		}
		return nil
	})
	m := download(ctx, t, recs+"/"+second.ID, f.APIKey, file)
	got, err = f.GetSession(ctx, s.ID)
	if err != nil || len(got.Recordings) != 2 || got.Recordings[1].State != apiv1.RecordingStopped || got.Recordings[1].Bytes != m {
		t.Fatalf("after the session ended it lists %+v (%v); downloaded %d bytes", got.Recordings, err, m)
	}
	probe(t, file, got.Recordings[1].DurationSeconds)
}

func download(ctx context.Context, t *testing.T, url, key, to string) int64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "video/webm" {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET recording: %s %s: %s", res.Status, res.Header.Get("Content-Type"), b)
	}
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = out.Close() }()
	n, err := io.Copy(out, res.Body)
	if err != nil || strconv.FormatInt(n, 10) != res.Header.Get("Content-Length") {
		t.Fatalf("download: %d bytes (Content-Length %s): %v", n, res.Header.Get("Content-Length"), err)
	}
	return n
}

// probe checks the file with ffprobe and ffmpeg: VP8 at 25 fps and Opus,
// every frame decoding, the header's duration and each stream's end within
// 40 ms of the recording's duration, the streams starting within 40 ms.
func probe(t *testing.T, path string, want float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-of", "json",
		"-show_entries", "stream=codec_type,codec_name,r_frame_rate,nb_read_frames,start_time:format=duration", path).Output()
	if err != nil {
		t.Fatalf("ffprobe (scripts/setup.sh installs ffmpeg): %v", err)
	}
	var p struct {
		Streams []struct {
			Type   string `json:"codec_type"`
			Codec  string `json:"codec_name"`
			Rate   string `json:"r_frame_rate"`
			Frames string `json:"nb_read_frames"`
			Start  string `json:"start_time"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &p); err != nil || len(p.Streams) != 2 {
		t.Fatalf("ffprobe: %s (%v)", out, err)
	}
	v, a := p.Streams[0], p.Streams[1]
	num := func(s string) float64 {
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("ffprobe number %q: %v", s, err)
		}
		return x
	}
	frames, packets := num(v.Frames), num(a.Frames)
	if v.Codec != "vp8" || v.Rate != "25/1" || a.Codec != "opus" || a.Type != "audio" {
		t.Fatalf("streams %+v", p.Streams)
	}
	if math.Abs(frames/25-want) > 0.040 || math.Abs(packets/50-want) > 0.040 {
		t.Errorf("%v video frames and %v audio packets for %.3f s", frames, packets, want)
	}
	if d := num(p.Format.Duration); math.Abs(d-want) > 0.040 {
		t.Errorf("duration %.3f s, the recording says %.3f s", d, want)
	}
	if off := math.Abs(num(v.Start) - num(a.Start)); off > 0.040 {
		t.Errorf("A/V start offset %.3f s", off)
	}
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", path, "-f", "null", "-").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("ffmpeg decode: %v: %s", err, out)
	}
	t.Logf("recording: %v frames at %s, %v Opus packets, %.3f s", frames, v.Rate, packets, want)
}
