package mediaruntime

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/inference"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

var concurrentDuration = flag.Duration("concurrent.duration", 10*time.Second,
	"how long BenchmarkConcurrentSessions measures each case (after a warm-up)")

// concurrentWarmup runs before the measured window: sessions start, the
// encoders settle, the first keyframes go out.
const concurrentWarmup = 2 * time.Second

// pacedMedia is a transport that drops the samples and checks each video
// frame against the wall clock: frame ts is due at start+ts, where start is
// when the session's first frame (ts 0) was written. A frame written more
// than one frame interval after it was due is late (a catch-up burst after
// a stall); frames the pipeline skipped (a stall longer than its catch-up)
// show as fewer frames than the wall clock asks for.
type pacedMedia struct {
	measuring *atomic.Bool
	start     time.Time // set by the first WriteVideo; media goroutine only

	frames, late atomic.Int64
	maxLate      atomic.Int64 // ns past due, worst measured frame
	closed       atomic.Bool
}

func (m *pacedMedia) WriteVideo(s pipeline.Sample) error {
	now := time.Now()
	if m.start.IsZero() {
		m.start = now.Add(-s.Timestamp)
	}
	if !m.measuring.Load() {
		return nil
	}
	m.frames.Add(1)
	past := now.Sub(m.start.Add(s.Timestamp))
	if past > pipeline.FrameDuration {
		m.late.Add(1)
	}
	for {
		cur := m.maxLate.Load()
		if int64(past) <= cur || m.maxLate.CompareAndSwap(cur, int64(past)) {
			break
		}
	}
	return nil
}

func (m *pacedMedia) WriteAudio(pipeline.Sample) error { return nil }
func (m *pacedMedia) Close() error                     { m.closed.Store(true); return nil }

// processCPU is the process's user+system CPU time so far, every thread
// (libvpx's, libopus's, ONNX Runtime's) included.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the CPU time every process on the machine has used so far
// (user, nice, system, irq, softirq from /proc/stat's "cpu" line), to tell
// how much of the machine other processes took during a measurement.
func machineBusy(tb testing.TB) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		tb.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}

// longSpeech is espeak-ng's speech, repeated to at least d, as a 16 kHz WAV.
func longSpeech(tb testing.TB, d time.Duration) []byte {
	tb.Helper()
	es, err := tts.NewEspeak(context.Background(), tts.EspeakOptions{})
	if err != nil {
		tb.Fatalf("espeak-ng: %v (run scripts/setup.sh first)", err)
	}
	a, err := es.Synthesize(context.Background(), "Hello there, I am the astronaut of AvatarFleet. "+
		"Every frame of my face is rendered by a small lip sync model, composited onto the avatar, "+
		"encoded with VP8 and sent with my voice in Opus, twenty five times a second.", "")
	if err != nil {
		tb.Fatal(err)
	}
	var pcm []float32
	for time.Duration(len(pcm))*time.Second/tts.SampleRate < d {
		pcm = append(pcm, a.Samples...)
	}
	return wav.Encode16(pcm, tts.SampleRate)
}

// BenchmarkConcurrentSessions runs N real sessions at once — the default
// model on ONNX Runtime, libvpx, libopus, the real 25 fps media clock — for
// -concurrent.duration each, all speaking (a long espeak-ng recording
// queued up front, enough for the whole run) or all idle — idle/own with
// the shared idle loop off (every session encodes its idle frames, as
// before it existed), idle/shared with it on (after a warm-up in which
// every session joins it) — and reports the
// process CPU time (every thread) per video frame sent, the share of a core
// a 25 fps session takes at that cost and the sessions per core it
// implies, the video frame rate the slowest session kept, the frames sent
// late (more than 40 ms past due: a catch-up burst) or never sent (skipped
// after a stall), over all sessions, and the CPU other processes on the
// machine used meanwhile (a shared machine: their load makes sessions miss
// frames that they would keep on an idle one). Real time is what is
// measured, so the benchmark runs one iteration whatever b.N is.
func BenchmarkConcurrentSessions(b *testing.B) {
	model := newModel(b)
	pack, err := defaultPack()
	if err != nil {
		b.Fatal(err)
	}
	speech := longSpeech(b, concurrentWarmup+*concurrentDuration+5*time.Second)
	for _, bc := range []struct {
		mode string
		n    int
	}{{"speaking", 2}, {"speaking", 4}, {"speaking", 8}, {"speaking", 16}, {"speaking", 24},
		{"idle/own", 4}, {"idle/own", 16}, {"idle/shared", 4}, {"idle/shared", 16}, {"idle/shared", 64}, {"idle/shared", 200}} {
		if bc.n > *concurrentMax {
			continue
		}
		b.Run(fmt.Sprintf("%s/n=%d", bc.mode, bc.n), func(b *testing.B) {
			for range b.N {
				runConcurrent(b, model, pack, bc.n, bc.mode == "speaking", bc.mode == "idle/own", speech)
			}
		})
	}
}

var concurrentMax = flag.Int("concurrent.max", 200, "BenchmarkConcurrentSessions skips the cases with more sessions than this")

// sharedWarmup is the warm-up of the idle/shared cases: the shared loop is
// encoded, then each session joins it at its next keyframe (at most 2 s).
const sharedWarmup = 5 * time.Second

// runConcurrent runs one case; noShare turns the shared idle loop off
// (idle/own: every session encodes its idle frames, as before it existed).
func runConcurrent(b *testing.B, model *inference.Model, pack *avatar.Pack, n int, speaking, noShare bool, speech []byte) {
	var measuring atomic.Bool
	var mu sync.Mutex
	media := map[string]*pacedMedia{}
	r, err := New(Config{
		Devices:     []*fleetv1.GPU{{Index: 0, Slots: uint32(n)}},
		Model:       model,
		Prewarm:     n,
		NoIdleShare: noShare,
		Avatar:      func(string) (*avatar.Pack, error) { return pack, nil },
		Media: func(s *fleetv1.Session, _ MediaHooks) (Media, error) {
			mu.Lock()
			defer mu.Unlock()
			media[s.GetId()] = &pacedMedia{measuring: &measuring}
			return media[s.GetId()], nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := r.Close(context.Background()); err != nil {
			b.Error(err)
		}
	}()
	ctx := context.Background()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("c%02d", i)
		if err := r.Start(ctx, &fleetv1.Session{Id: ids[i], Slot: uint32(i)}); err != nil {
			b.Fatal(err)
		}
		if speaking {
			if err := r.PushAudio(ctx, ids[i], speech, false); err != nil {
				b.Fatal(err)
			}
		}
	}
	if speaking || noShare {
		time.Sleep(concurrentWarmup)
	} else {
		time.Sleep(sharedWarmup)
	}
	before := make([]Stats, n)
	for i, id := range ids {
		if before[i], err = r.Stats(id); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	cpu0, busy0, t0 := processCPU(b), machineBusy(b), time.Now()
	measuring.Store(true)
	time.Sleep(*concurrentDuration)
	measuring.Store(false)
	cpu, wall := processCPU(b)-cpu0, time.Since(t0)
	others := max(0, machineBusy(b)-busy0-cpu)
	b.StopTimer()

	var frames, late, missing, inferred, shared int64
	var worstLate time.Duration
	perSession := int64(wall.Seconds() * float64(time.Second/pipeline.FrameDuration))
	minFPS := 1e9
	for i, id := range ids {
		st, err := r.Stats(id)
		if err != nil {
			b.Fatal(err)
		}
		inferred += int64(st.Inferred - before[i].Inferred)
		shared += int64(st.Shared - before[i].Shared)
		mu.Lock()
		m := media[id]
		mu.Unlock()
		f := m.frames.Load()
		frames += f
		missing += max(0, perSession-f-1) // ±1: where the window's ends fall between ticks
		late += m.late.Load()
		worstLate = max(worstLate, time.Duration(m.maxLate.Load()))
		minFPS = min(minFPS, float64(f)/wall.Seconds())
	}
	want := perSession * int64(n)
	// CPU per frame sent, not per session-second: when sessions fall
	// behind, they send fewer frames and use less CPU per second than a
	// session that keeps up would.
	perFrame := cpu / time.Duration(max(frames, 1))
	share := float64(perFrame) / float64(pipeline.FrameDuration)
	b.ReportMetric(float64(perFrame.Microseconds())/1000, "cpu-ms/frame")
	b.ReportMetric(100*share, "%core/session")
	b.ReportMetric(1/share, "sessions/core")
	b.ReportMetric(100*others.Seconds()/wall.Seconds(), "%cpu-others")
	b.ReportMetric(minFPS, "min-fps")
	b.ReportMetric(float64(late), "late-frames")
	b.ReportMetric(float64(missing), "missing-frames")
	b.ReportMetric(float64(worstLate.Microseconds())/1000, "worst-ms-past-due")
	b.ReportMetric(float64(inferred)/float64(max(frames, 1)), "inferred/frame")
	b.ReportMetric(float64(shared)/float64(max(frames, 1)), "shared/frame")
	kept := late == 0 && missing == 0
	b.Logf("%d sessions, speaking=%v, %.1f s: %.2f ms CPU per frame = %.1f%% of a core per 25 fps session "+
		"(%.1f sessions/core); slowest %.2f fps, %d late, %d missing of %d frames, worst %.1f ms past due, "+
		"%.0f%% inferred, %.0f%% from the shared idle loop; other processes used %.0f%% of a core meanwhile: kept 25 fps: %v",
		n, speaking, wall.Seconds(), float64(perFrame.Microseconds())/1000, 100*share, 1/share, minFPS, late, missing, want,
		float64(worstLate.Microseconds())/1000, 100*float64(inferred)/float64(max(frames, 1)), 100*float64(shared)/float64(max(frames, 1)),
		100*others.Seconds()/wall.Seconds(), kept)
}
