//go:build linux

package mediabench

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
)

// startFleet is the benchmarks' fleet: one CPU worker with 4 slots, every
// inference context made at start.
func startFleet(b *testing.B, args ...string) *binfleet.Fleet {
	b.Helper()
	return binfleet.Start(b, binfleet.Options{Workers: []binfleet.WorkerSpec{{
		ID: "bench-worker", SlotsPerGPU: 4, Args: append([]string{"--prewarm", "-1"}, args...),
	}}})
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func maxOf(d []time.Duration) time.Duration {
	var m time.Duration
	for _, v := range d {
		m = max(m, v)
	}
	return m
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
