package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/agent"
)

// Flags of BenchmarkPlacement, to run a part of it (e.g. while profiling
// or chasing an error): `go test -bench Placement$ ./bench/ -args
// -placement.replicas 3 -placement.raw=false -placement.log`.
var (
	placementReplicas = flag.String("placement.replicas", "1,3", "comma-separated control-plane replica counts to measure")
	placementRaw      = flag.Bool("placement.raw", true, "measure the raw etcd reservation transaction before each closed loop")
	placementLog      = flag.Bool("placement.log", false, "send the fleet's logs (debug level) to stderr")
)

// replicaCounts parses -placement.replicas.
func replicaCounts(b *testing.B) []int {
	var out []int
	for _, f := range strings.Split(*placementReplicas, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 9 {
			b.Fatalf("-placement.replicas %q: want counts of 1..9, comma-separated", *placementReplicas)
		}
		out = append(out, n)
	}
	return out
}

// Sizes of the runs. Big enough for stable figures on a 2-core machine,
// small enough that `make bench` takes a few minutes.
var concurrencies = []int{1, 128, 512}

// creates is the number of placements per closed-loop run.
func creates(concurrency int) int {
	if concurrency == 1 {
		return 300 // latency at rest; more only takes longer
	}
	return peakCreates
}

const (
	peakCreates     = 4000
	halfLoadSeconds = 4
	rawTxns         = 4000
)

type row struct {
	what       string
	perSecond  float64
	p50, p99   time.Duration
	concurrent string
	// ratio is a closed-loop placement's rate over the raw transaction's
	// at the same concurrency, measured just before it; 0 when none.
	ratio float64
}

// BenchmarkPlacement measures, in one run on one machine: REST placements
// (create → slot reserved → worker acknowledged → 201) through 1 and 3
// control-plane replicas, closed loop at each concurrency and open loop at
// half of peak, and before each closed loop the raw throughput of the
// reservation transaction alone on a 3-member etcd at that concurrency.
// The pairs are measured back to back so that the ratio holds on a shared
// machine whose speed drifts over the run.
func BenchmarkPlacement(b *testing.B) {
	var rows []row
	for range b.N {
		rows = rows[:0]
		for _, replicas := range replicaCounts(b) {
			rows = append(rows, placements(b, replicas)...)
		}
	}
	printTable(os.Stdout, rows)
	for _, r := range rows {
		if strings.HasPrefix(r.what, "etcd") && r.concurrent == fmt.Sprint(concurrencies[len(concurrencies)-1]) {
			b.ReportMetric(r.perSecond, "raw-txn/s")
			break
		}
	}
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nmeasure\tconcurrency\tper second\tp50\tp99\t÷ raw")
	for _, r := range rows {
		ratio := ""
		if r.ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", r.ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\n", r.what, r.concurrent, r.perSecond, ms(r.p50), ms(r.p99), ratio)
	}
	_ = tw.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[min(len(lat)-1, int(p*float64(len(lat))))]
}

// rawReserve runs fleetstore.Reserve, the one transaction a placement must
// commit, against a 3-member cluster with a given number of callers.
func rawReserve(b *testing.B, callers int) row {
	f := testfleet.Start(b, testfleet.Options{EtcdMembers: 3, Fsync: true, EtcdSnapshotCount: 1 << 30})
	// A prefix of its own: the replica's supervisor would health-check a
	// worker record under the fleet's prefix and mark it down.
	store := fleetstore.New(f.Client, fleetstore.NewKeys("/rawbench/"))
	ctx := context.Background()
	lease, err := f.Client.Grant(ctx, 60)
	if err != nil {
		b.Fatal(err)
	}
	if err := store.PutWorker(ctx, &fleetv1.Worker{Id: "raw"}, lease.ID); err != nil {
		b.Fatal(err)
	}
	resp, err := f.Client.Get(ctx, store.Keys().Worker("raw"))
	if err != nil {
		b.Fatal(err)
	}
	rev := resp.Kvs[0].ModRevision
	var next atomic.Int64
	lat := make([]time.Duration, rawTxns)
	start := time.Now()
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= rawTxns {
					return
				}
				t0 := time.Now()
				_, ok, err := store.Reserve(ctx, fleetstore.Reservation{
					Worker: "raw", WorkerLease: lease.ID, WorkerRevision: rev, GPU: 0, Slot: uint32(i),
				}, &fleetv1.Session{Id: fmt.Sprintf("raw-%d", i)})
				if err != nil || !ok {
					b.Errorf("reserve %d: %v %v", i, ok, err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	f.Stop() // its members would only take the machine from what follows
	return row{what: "etcd reserve txn (raw)", concurrent: fmt.Sprint(callers), perSecond: rawTxns / elapsed.Seconds(),
		p50: percentile(lat, 0.5), p99: percentile(lat, 0.99)}
}

// placements measures REST creates through n replicas: closed-loop at each
// concurrency, then open-loop at half the best rate seen.
func placements(b *testing.B, replicas int) []row {
	var workers []testfleet.WorkerSpec
	for i := range 4 {
		workers = append(workers, testfleet.WorkerSpec{ID: fmt.Sprintf("w%d", i), GPUs: 4, SlotsPerGPU: 1024})
	}
	f := testfleet.Start(b, testfleet.Options{EtcdMembers: 3, Replicas: replicas, Workers: workers, Fsync: true, EtcdSnapshotCount: 1 << 30,
		// The workers' production lease, not the tests' 2 s (made for quick
		// loss detection): on a starved 2-core machine a 2 s lease can miss
		// its keep-alives mid-run, and the worker then fences itself and
		// stops thousands of sessions, which measures recovery, not placement.
		WorkerLeaseTTL: agent.DefaultLeaseTTL, Verbose: *placementLog})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}}
	defer client.CloseIdleConnections()
	create := func(i int) (time.Duration, error) {
		req, _ := http.NewRequest("POST", f.URL(i%replicas)+"/v1/sessions", bytes.NewReader([]byte(`{}`)))
		req.Header.Set("Authorization", "Bearer "+testfleet.SessionsKey)
		req.Header.Set("Content-Type", "application/json")
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != 201 {
			return 0, fmt.Errorf("replica %d: status %d: %s", i%replicas, resp.StatusCode, bytes.TrimSpace(body))
		}
		return time.Since(t0), nil
	}

	var rows []row
	peakRate := 0.0
	sent := 0
	for _, concurrency := range concurrencies {
		var raw row
		if *placementRaw {
			raw = rawReserve(b, concurrency)
			rows = append(rows, raw)
		}
		n := creates(concurrency)
		lat := make([]time.Duration, n)
		var next atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					d, err := create(sent + i)
					if err != nil {
						b.Errorf("create %d: %v", i, err)
						return
					}
					lat[i] = d
				}
			})
		}
		wg.Wait()
		sent += n
		rate := float64(n) / time.Since(start).Seconds()
		peakRate = max(peakRate, rate)
		r := row{what: fmt.Sprintf("REST placement, %d replica(s), closed loop", replicas), concurrent: fmt.Sprint(concurrency),
			perSecond: rate, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99)}
		if raw.perSecond > 0 {
			r.ratio = rate / raw.perSecond
		}
		rows = append(rows, r)
	}

	// Half of peak: open loop, latency counted from each request's
	// scheduled start, so a stall shows up instead of hiding.
	target := peakRate / 2
	n := int(target * halfLoadSeconds)
	halfLat := make([]time.Duration, n)
	interval := time.Duration(float64(time.Second) / target)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(due))
		wg.Go(func() {
			if _, err := create(sent + i); err != nil {
				b.Errorf("create at half load: %v", err)
				return
			}
			halfLat[i] = time.Since(due)
		})
	}
	wg.Wait()
	return append(rows, row{what: fmt.Sprintf("REST placement, %d replica(s), half of peak", replicas), concurrent: fmt.Sprintf("%.0f/s open", target),
		perSecond: float64(n) / time.Since(start).Seconds(), p50: percentile(halfLat, 0.5), p99: percentile(halfLat, 0.99)})
}
