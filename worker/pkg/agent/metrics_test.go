package agent

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsAndAdvertisedNames scrapes a running worker's /metrics over
// HTTP (Go runtime figures and an extra collector, as the SFU registers
// its own), checks the worker record advertises its avatars and voices,
// and that the endpoint goes away with the worker.
func TestMetricsAndAdvertisedNames(t *testing.T) {
	id := servers.Name(t, "w")
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "avatarfleet_sfu_test_total", Help: "test"})
	extra.Add(7)
	r := startAgent(t, id, func(o *Options) {
		o.MetricsListen = "127.0.0.1:0"
		o.Collectors = []prometheus.Collector{extra}
		o.Avatars = []string{"default", "alice"}
		o.Voices = []string{"en-us"}
	})
	addr := r.agent.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics address")
	}
	body := scrape(t, "http://"+addr+"/metrics")
	for _, want := range []string{"avatarfleet_sfu_test_total 7", "go_goroutines ", "process_"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	w, err := r.store.Worker(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.GetAvatars(), []string{"default", "alice"}) || !slices.Equal(w.GetVoices(), []string{"en-us"}) {
		t.Errorf("worker record avatars %v voices %v", w.GetAvatars(), w.GetVoices())
	}
	r.stop()
	if err := r.wait(t, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		_ = resp.Body.Close()
		t.Fatal("/metrics still served after the worker stopped")
	}
}

// TestMetricsDisabledAndBadAddress: no address serves nothing; a bad one
// fails New.
func TestMetricsDisabledAndBadAddress(t *testing.T) {
	opts := Options{ID: "m", EtcdEndpoints: []string{"http://127.0.0.1:1"}, NATSURL: "nats://127.0.0.1:1", GRPCListen: "127.0.0.1:0", NewRuntime: holderRuntime}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.MetricsAddr() != "" {
		t.Errorf("metrics served at %s without MetricsListen", a.MetricsAddr())
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	opts.MetricsListen = "no-port"
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "listen for metrics") {
		t.Fatalf("bad metrics address: %v", err)
	}
}

func scrape(t *testing.T, url string) string {
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
