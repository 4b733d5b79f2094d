package repotest

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// modulePrefix marks a stack frame in this repository's code.
const modulePrefix = "github.com/avatarfleet/avatarfleet/"

// TestingM is what goleak.VerifyTestMain runs: a *testing.M, or one
// wrapped by WatchHangs.
type TestingM interface{ Run() int }

// WatchHangs wraps m so that a test binary about to hit its -test.timeout
// first writes a short report of the goroutines that are in this
// repository's code and exits. The timeout's own panic prints every
// goroutine of the process (etcd, NATS, gRPC: thousands of lines); where
// only the end of a CI log is shown, the frame that hangs is lost in them.
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }
func WatchHangs(m TestingM) TestingM { return hangWatch{m: m} }

type hangWatch struct{ m TestingM }

func (h hangWatch) Run() int {
	// testing.M.Run parses the flags too; parsing first is allowed and
	// lets the timeout be read.
	if !flag.Parsed() {
		flag.Parse()
	}
	timeout := testTimeout()
	if timeout <= 0 {
		return h.m.Run()
	}
	start := time.Now()
	t := time.AfterFunc(reportAt(timeout), func() {
		writeHangReport(os.Stderr, time.Since(start))
		os.Exit(2)
	})
	defer t.Stop()
	return h.m.Run()
}

// testTimeout is the -test.timeout the binary runs under (0: none).
func testTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return 0
	}
	d, _ := g.Get().(time.Duration)
	return d
}

// reportAt is when to report: a minute (at most a tenth) before timeout.
func reportAt(timeout time.Duration) time.Duration {
	return timeout - min(timeout/10, time.Minute)
}

// writeHangReport writes the goroutines whose stacks pass through this
// repository's code, identical stacks once with a count, each cut to
// its top frame and this repository's frames.
func writeHangReport(w io.Writer, running time.Duration) {
	groups := hangGroups(allStacks())
	fmt.Fprintf(w, "\n=== HANG REPORT: the tests still run after %s, close to -test.timeout.\n", running.Round(time.Second))
	fmt.Fprintf(w, "=== %d kinds of goroutine are in %s code (the test functions among them are what runs):\n\n",
		len(groups), strings.TrimSuffix(modulePrefix, "/"))
	for _, g := range groups {
		fmt.Fprintf(w, "%d× %s\n", g.count, g.text)
	}
	fmt.Fprintln(w, "=== END OF HANG REPORT")
}

func allStacks() []byte {
	for size := 1 << 20; ; size *= 2 {
		buf := make([]byte, size)
		if n := runtime.Stack(buf, true); n < size {
			return buf[:n]
		}
	}
}

type hangGroup struct {
	text  string
	count int
}

// hangGroups parses runtime.Stack(all) output into goroutines that touch
// this repository's code, summarised and grouped by their summary, the
// most frequent first.
func hangGroups(stacks []byte) []hangGroup {
	counts := map[string]int{}
	for g := range bytes.SplitSeq(stacks, []byte("\n\n")) {
		if s, ok := summarise(string(g)); ok {
			counts[s]++
		}
	}
	out := make([]hangGroup, 0, len(counts))
	for s, n := range counts {
		out = append(out, hangGroup{text: s, count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].count != out[j].count {
			return out[i].count > out[j].count
		}
		return out[i].text < out[j].text
	})
	return out
}

// summarise cuts one goroutine's stack ("goroutine N [state, T]:" then
// function/file line pairs) to its state, its top frame and the frames in
// this repository; ok is false when none is.
func summarise(g string) (string, bool) {
	lines := strings.Split(strings.TrimSpace(g), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "goroutine ") {
		return "", false
	}
	var b strings.Builder
	// "goroutine 12 [select, 27 minutes]:" → "[select, 27 minutes]"
	if i := strings.Index(lines[0], "["); i >= 0 {
		b.WriteString(strings.TrimSuffix(lines[0][i:], ":"))
	}
	b.WriteByte('\n')
	ours := false
	for i := 1; i+1 < len(lines); i += 2 {
		fn, file := lines[i], strings.TrimSpace(lines[i+1])
		mine := strings.Contains(fn, modulePrefix)
		if i == 1 || mine {
			// Arguments (pointers) and goroutine numbers differ between
			// identical stacks.
			if j := strings.Index(fn, " in goroutine "); j > 0 && strings.HasPrefix(fn, "created by ") {
				fn = fn[:j]
			} else if j := strings.LastIndex(fn, "("); j > 0 && !strings.HasPrefix(fn, "created by ") {
				fn = fn[:j]
			}
			if k := strings.LastIndex(file, " +0x"); k > 0 {
				file = file[:k]
			}
			fmt.Fprintf(&b, "    %s\n        %s\n", fn, file)
		}
		ours = ours || mine
	}
	return b.String(), ours
}
