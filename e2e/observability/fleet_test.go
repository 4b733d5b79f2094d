//go:build linux

package observability

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m),
		// http.DefaultClient's kept-alive connections to the binaries.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// TestDashboardAgainstRunningBinaries starts bin/controlplane and
// bin/worker, runs a session that a WHEP viewer watches and that speaks
// text (espeak-ng), scrapes both /metrics endpoints and checks every
// query of the shipped dashboard against what they expose: each metric,
// label matcher and grouping label must exist. It also checks that the
// figures the dashboard is for have real samples: the session's GPU slot,
// a placement, time to first frame, inference, encode and TTS latency.
func TestDashboardAgainstRunningBinaries(t *testing.T) {
	dash, err := LoadDashboard(filepath.Join(binfleet.RepoRoot(t), "deploy", "helm", "avatarfleet", "dashboards", "avatarfleet.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := binfleet.Start(t, binfleet.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	sess, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	f.WaitUntil(t, "session ready", 60*time.Second, func() error {
		s, err := f.GetSession(ctx, sess.ID)
		if err == nil && s.State != apiv1.StateReady {
			err = fmt.Errorf("state %s", s.State)
		}
		return err
	})
	dialCtx, dialCancel := context.WithTimeout(ctx, 30*time.Second)
	viewer, err := whepviewer.Dial(dialCtx, f.WHEPURL(sess), sess.ViewerToken, whepviewer.Options{})
	dialCancel()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = viewer.Close() }()
	select {
	case <-viewer.FirstPacket():
	case <-ctx.Done():
		t.Fatal("no media reached the viewer")
	}
	speak := []byte(`{"text":"Hello, this is a test of the avatar's dashboard."}`)
	if err := binfleet.Call(ctx, http.MethodPost, f.URL+"/v1/sessions/"+sess.ID+"/speak", f.APIKey, "application/json", speak, http.StatusAccepted, nil); err != nil {
		t.Fatal(err)
	}

	// The worker's figures, while the session lives (its gauges go with it).
	var workerText string
	f.WaitUntil(t, "speech rendered and counted", 90*time.Second, func() error {
		text, err := scrape(ctx, f.WorkerMetricsURL(0))
		if err != nil {
			return err
		}
		workerText = text
		fams, err := families(text)
		if err != nil {
			return err
		}
		for _, name := range []string{"avatarfleet_worker_tts_latency_seconds", "avatarfleet_worker_inference_seconds"} {
			if n := histogramCount(fams, name); n < 1 {
				return fmt.Errorf("%s has %d samples", name, n)
			}
		}
		return nil
	})
	wf, err := families(workerText)
	if err != nil {
		t.Fatal(err)
	}
	if n := histogramCount(wf, "avatarfleet_worker_time_to_first_frame_seconds"); n != 1 {
		t.Errorf("time to first frame has %d samples, want 1 (one session)", n)
	}
	// Every frame is encoded, the model renders only speaking ones (the
	// inference histogram is read first, hence the one frame of slack).
	enc, inf := histogramCount(wf, "avatarfleet_worker_encode_seconds"), histogramCount(wf, "avatarfleet_worker_inference_seconds")
	if enc == 0 || enc+1 < inf {
		t.Errorf("%d encodes observed for %d model runs", enc, inf)
	}
	if v := value(wf, "avatarfleet_worker_session_viewers", nil); v != 1 {
		t.Errorf("worker reports %v viewers, want 1", v)
	}

	if err := viewer.HangUp(ctx); err != nil {
		t.Error(err)
	}
	if err := f.DeleteSession(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	cpText, err := scrape(ctx, f.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := families(cpText)
	if err != nil {
		t.Fatal(err)
	}
	if v := value(cf, "avatarfleet_fleet_gpu_slots", map[string]string{"worker": f.WorkerIDs[0], "gpu": "0"}); v != 1 {
		t.Errorf("fleet reports %v slots on %s GPU 0, want 1 (--slots-per-gpu 1)", v, f.WorkerIDs[0])
	}
	if v := value(cf, "avatarfleet_fleet_workers", map[string]string{"state": "active"}); v != 1 {
		t.Errorf("fleet reports %v active workers, want 1", v)
	}
	// The session's record, listed at this first scrape, after its end.
	if v := value(cf, "avatarfleet_sessions", map[string]string{"state": "ended"}); v != 1 {
		t.Errorf("control plane reports %v ended sessions, want 1", v)
	}
	if n := len(cf["avatarfleet_sessions"].GetMetric()); n != 5 {
		t.Errorf("avatarfleet_sessions has %d states, want 5 (placing, starting, ready, ended, failed)", n)
	}
	if n := histogramCount(cf, "avatarfleet_placement_duration_seconds"); n < 1 {
		t.Errorf("no placement observed")
	}

	cat, err := ParseExposition("controlplane", strings.NewReader(cpText))
	if err != nil {
		t.Fatal(err)
	}
	wcat, err := ParseExposition("worker", strings.NewReader(workerText))
	if err != nil {
		t.Fatal(err)
	}
	cat.Merge(wcat)
	qs, err := dash.Queries()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d dashboard queries checked against %d series names (control plane and worker)", len(qs), len(cat))
	if err := cat.CheckDashboard(dash); err != nil {
		t.Fatalf("the dashboard does not match the binaries' metrics:\n%v", err)
	}
	for name, s := range cat {
		if strings.HasPrefix(name, "avatarfleet_") && (s.Labels["session"] || s.Labels["session_id"] || s.Labels["viewer"]) {
			t.Errorf("%s (%s) has a session or viewer label: unbounded", name, s.Source)
		}
	}
}

// scrape GETs a /metrics URL.
func scrape(ctx context.Context, url string) (string, error) {
	var b strings.Builder
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("scrape %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scrape %s: %s", url, res.Status)
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		b.Write(buf[:n])
		if b.Len() > maxExpositionBytes {
			return "", fmt.Errorf("scrape %s: over %d bytes", url, maxExpositionBytes)
		}
		if err != nil {
			break
		}
	}
	return b.String(), nil
}

func families(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

// histogramCount sums a histogram's sample counts over its series.
func histogramCount(fams map[string]*dto.MetricFamily, name string) uint64 {
	var n uint64
	for _, m := range fams[name].GetMetric() {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// value sums the gauge or counter series of name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var v float64
next:
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, w := range want {
			if have[k] != w {
				continue next
			}
		}
		v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return v
}
