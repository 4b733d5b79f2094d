package bench

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// Sizes of the link-security comparison: each mode runs linkRounds times,
// alternating, and keeps its best round, so a noisy neighbour on a shared
// machine does not decide the ratio.
const (
	linkCreates     = 1500
	linkConcurrency = 128
	linkRounds      = 2
)

// BenchmarkPlacementLinkSecurity measures REST placement throughput with
// every link secured (the default: control plane ↔ worker in mutual TLS,
// etcd and NATS over TLS with per-role credentials) and with everything
// off (plaintext, open etcd and NATS), in the same run on the same
// machine, and prints the ratio. Each placement makes one StartSession
// call over the worker link and one authenticated etcd transaction.
func BenchmarkPlacementLinkSecurity(b *testing.B) {
	var best [2]row // 0: everything off, 1: everything on
	for range b.N {
		for round := range linkRounds {
			for mode, insecure := range []bool{true, false} {
				r := linkRun(b, insecure, round)
				if r.perSecond > best[mode].perSecond {
					best[mode] = r
				}
			}
		}
	}
	printTable(os.Stdout, best[:])
	ratio := best[1].perSecond / best[0].perSecond
	fmt.Printf("placement throughput with mutual TLS and credentials / everything off: %.3f (cost %.1f%%)\n", ratio, 100*(1-ratio))
	b.ReportMetric(ratio, "secure/plain")
}

// linkRun starts a fleet (one replica, one fsynced etcd member, two
// workers), secured or not, and runs linkCreates closed-loop creates.
func linkRun(b *testing.B, insecure bool, round int) row {
	f := testfleet.Start(b, testfleet.Options{
		Workers:       []testfleet.WorkerSpec{{ID: "w0", GPUs: 4, SlotsPerGPU: 1024}, {ID: "w1", GPUs: 4, SlotsPerGPU: 1024}},
		Fsync:         true,
		FleetInsecure: insecure,
		NoCredentials: insecure,
	})
	defer f.Stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: linkConcurrency, MaxConnsPerHost: linkConcurrency}}
	defer client.CloseIdleConnections()
	lat := make([]time.Duration, linkCreates)
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range linkConcurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= linkCreates {
					return
				}
				t0 := time.Now()
				if err := createSession(client, f.URL(0)); err != nil {
					b.Errorf("create %d: %v", i, err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	what := "REST placement, mTLS + etcd/NATS TLS and credentials"
	if insecure {
		what = "REST placement, plaintext, no credentials"
	}
	return row{what: fmt.Sprintf("%s (round %d of %d)", what, round+1, linkRounds), concurrent: fmt.Sprint(linkConcurrency),
		perSecond: float64(linkCreates) / time.Since(start).Seconds(), p50: percentile(lat, 0.5), p99: percentile(lat, 0.99)}
}

func createSession(client *http.Client, base string) error {
	req, _ := http.NewRequest("POST", base+"/v1/sessions", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Authorization", "Bearer "+testfleet.SessionsKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
