package mediaruntime

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestMetricsScrape serves the runtime's collector over HTTP and scrapes
// it: a session that spoke shows in its GPU's and avatar's frames,
// keyframes, inferred frames and viewers, the inference, encode and
// first-frame histograms have samples, no series names a session, and an ended session's counts stay
// in the counters (which never go down) while its gauges go.
func TestMetricsScrape(t *testing.T) {
	c := newChurn(t, newModel(t), 1, 1)
	reg := prometheus.NewRegistry()
	if err := reg.Register(c.r); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	c.start(t, "m", 0)
	if err := c.r.PushAudio(t.Context(), "m", toneWAV(), false); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	clock := c.clocks["m"]
	c.mu.Unlock()
	const more = 12 // frames after the first: enough to reach the speech past the latency
	for range more {
		select {
		case clock.Ticks() <- time.Time{}:
		case <-time.After(10 * time.Second):
			t.Fatal("tick not taken")
		}
	}
	c.r.mu.Lock()
	s := c.r.sessions["m"]
	c.r.mu.Unlock()
	r := c.r
	r.hooks(s).ViewersChanged(2)
	deadline := time.Now().Add(10 * time.Second)
	for s.p().Status().Frames < more+1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	labels := `{avatar="",gpu="0"}`
	body := get(t, srv.URL)
	for _, want := range []string{
		"avatarfleet_worker_sessions 1",
		"avatarfleet_worker_session_video_frames_sent_total" + labels + " 13",
		"avatarfleet_worker_session_video_keyframes_sent_total" + labels + " 1",
		"avatarfleet_worker_session_audio_packets_sent_total" + labels + " 26",
		"avatarfleet_worker_session_viewers" + labels + " 2",
		// Speaking from the loop's only keyframe in reach (frame 0) on.
		"avatarfleet_worker_session_shared_idle_frames_total" + labels + " 0",
		`avatarfleet_worker_inference_contexts_created_total{gpu="0"} 1`,
		`avatarfleet_worker_inference_seconds_count{gpu="0"} `,
		`avatarfleet_worker_encode_seconds_count{gpu="0"} 13`,
		`avatarfleet_worker_time_to_first_frame_seconds_count{gpu="0"} 1`,
		// The manual clock's ticks are never overdue.
		`avatarfleet_worker_late_frames_total{gpu="0"} 0`,
		`avatarfleet_worker_skipped_frames_total{gpu="0"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "avatarfleet_worker_session_inferred_frames_total"+labels+" 0\n") ||
		strings.Contains(body, `avatarfleet_worker_inference_seconds_count{gpu="0"} 0`) {
		t.Errorf("speech drove no inference:\n%s", body)
	}
	if strings.Contains(body, "session=") || strings.Contains(body, "slot=") || strings.Contains(body, `"m"`) {
		t.Errorf("a series names the session:\n%s", body)
	}
	frames := s.p().Status().Frames
	c.stop(t, "m")
	body = get(t, srv.URL)
	if !strings.Contains(body, "avatarfleet_worker_sessions 0") || strings.Contains(body, "avatarfleet_worker_session_viewers{") {
		t.Errorf("ended session still counted live:\n%s", body)
	}
	var got uint64
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "avatarfleet_worker_session_video_frames_sent_total"+labels+" "); ok {
			got, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if got < frames {
		t.Errorf("frames counter went down after the session ended: %d < %d\n%s", got, frames, body)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}
