//go:build linux

package avsync

import (
	"context"
	"flag"
	"fmt"
	"image"
	"math"
	"os"
	"slices"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
	"github.com/avatarfleet/avatarfleet/proto/repotest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"

	"github.com/avatarfleet/avatarfleet/e2e/internal/lipmeasure"
)

const (
	// maxLag bounds the cross-correlation's lag and the stop difference.
	maxLag = 40 * time.Millisecond
	// idleRefFrames covers the idle loop's ping-pong period; then
	// idleCheckFrames measure how far idle frames stray from them.
	idleRefFrames   = 110
	idleCheckFrames = 25
	burst           = 300 * time.Millisecond
)

var gaps = []time.Duration{400, 650, 500, 700, 450, 600, 550}

var lookAhead = flag.Int("avsync.lookahead_ms", -1,
	"run the worker with the generated default model re-declared with this look-ahead (ONNX metadata avatarfleet.lookahead_ms, 0..200) instead of the default model as it is (-1)")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(repotest.WatchHangs(m),
		// http.DefaultClient's kept-alive connections to the control plane.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// mouthRegion is where the mouth opens and the jaw drops: the mouth box
// the avatar pack found (Pack.Mouth), widened and reaching down to the chin,
// joined with the region the media benchmark watches (from the face box).
func mouthRegion(t *testing.T) image.Rectangle {
	pack, err := avatar.Default()
	if err != nil {
		t.Fatal(err)
	}
	f := avatar.DefaultFace()
	w, h := f.Dx(), f.Dy()
	r := image.Rect(f.Min.X+w/4, f.Min.Y+h*3/5, f.Max.X-w/4, f.Max.Y+h/10)
	if m, ok := pack.Mouth(0); ok {
		b := m.Box
		r = r.Union(image.Rect(b.Min.X-b.Dx()/4, b.Min.Y-b.Dy()/4, b.Max.X+b.Dx()/4, b.Max.Y+b.Dy()))
	}
	return r.Intersect(image.Rect(0, 0, pack.Width(), pack.Height()))
}

// TestLipSyncFromOutside: see the package comment. The figures are logged
// (go test -v) and in README, "Latency contract".
func TestLipSyncFromOutside(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rec := newRecorder(mouthRegion(t))
	var model []string
	if *lookAhead >= 0 {
		model = lipmeasure.LookAheadModel(t, *lookAhead)
	}
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{ID: "avsync-worker", Args: model}}})
	s, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := whepviewer.Dial(ctx, f.WHEPURL(s), s.ViewerToken, rec.options())
	if err != nil {
		t.Fatal(err)
	}
	hungUp := false
	defer func() {
		if !hungUp {
			_ = v.HangUp(ctx)
		}
		if err := f.DeleteSession(ctx, s.ID); err != nil {
			t.Error(err)
		}
	}()
	if _, err := v.WaitFirstFrame(ctx); err != nil {
		t.Fatalf("first frame: %v", err)
	}
	// Idle references, then how far idle frames stray from them.
	start := rec.frameCount()
	for rec.frameCount() < start+idleRefFrames+idleCheckFrames {
		if err := ctx.Err(); err != nil {
			t.Fatalf("idle frames: %v (viewer: %v)", err, v.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
	idle := rec.framesSince(start)
	var refs [][]float64
	for _, fr := range idle[:idleRefFrames] {
		refs = append(refs, fr.mouth)
	}
	idleMax := 0.0
	for _, fr := range idle[idleRefFrames : idleRefFrames+idleCheckFrames] {
		idleMax = max(idleMax, lipmeasure.Nearest(fr.mouth, refs))
	}
	threshold := max(1.0, 2*idleMax)

	// The bursts, then a long burst interrupted in its middle.
	bursts, onsets := burstWAV(300*time.Millisecond, burst, ms(gaps...))
	posted := time.Now()
	if err := f.PostAudio(ctx, s.ID, bursts); err != nil {
		t.Fatal(err)
	}
	last := onsets[len(onsets)-1] + burst
	time.Sleep(last + 1200*time.Millisecond)
	long, _ := burstWAV(0, 3*time.Second, nil)
	posted2 := time.Now()
	if err := f.PostAudio(ctx, s.ID, long); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	interrupted := time.Now()
	if err := f.Interrupt(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	hungUp = true
	if err := v.HangUp(ctx); err != nil {
		t.Error(err)
	}

	a := analyse(t, rec, refs, threshold)
	a.postBursts(t, posted, posted2)
	a.postInterrupt(t, posted2, interrupted)
	a.print(idleMax, threshold)
}

func ms(v ...time.Duration) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = x * time.Millisecond
	}
	return out
}

// analysis is the recording on the sender's clock.
type analysis struct {
	frames []frameRec
	mouth  []float64 // distance of each frame's mouth from the idle frames
	vt     []float64 // each frame's sender time
	audio  []audioRec
	energy []float64
	at     []float64 // each packet's sender time
	// threshold: the mouth is open (a quarter of its widest opening, at
	// least twice what idle frames stray); change: the mouth region
	// differs from the idle frames by more than twice its median (the
	// session's own encoder's noise on idle frames) — visible or not.
	threshold, change float64
	thrA              float64 // loud packet: a tenth of the loudest
	lines             [][2]string
}

func analyse(t *testing.T, rec *recorder, refs [][]float64, threshold float64) *analysis {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	a := &analysis{frames: rec.frames, audio: rec.audio, threshold: threshold}
	slices.SortStableFunc(a.audio, func(x, y audioRec) int { return int(int16(x.seq - y.seq)) })
	vsr, asr := rec.srs[webrtc.RTPCodecTypeVideo], rec.srs[webrtc.RTPCodecTypeAudio]
	if len(vsr) == 0 || len(asr) == 0 {
		t.Fatalf("%d video and %d audio sender reports: want both", len(vsr), len(asr))
	}
	base := min(vsr[0].ntp, asr[0].ntp)
	vmap, err := newClockMap(vsr, 90000, base)
	if err != nil {
		t.Fatal(err)
	}
	amap, err := newClockMap(asr, 48000, base)
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range a.frames {
		a.mouth = append(a.mouth, lipmeasure.Nearest(fr.mouth, refs))
		a.vt = append(a.vt, vmap.at(fr.ts))
	}
	if a.energy, err = energies(a.audio); err != nil {
		t.Fatal(err)
	}
	loudest := 0.0
	for i, p := range a.audio {
		a.at = append(a.at, amap.at(p.ts))
		loudest = max(loudest, a.energy[i])
	}
	a.thrA = loudest / 10
	widest := 0.0
	for _, m := range a.mouth {
		widest = max(widest, m)
	}
	sorted := slices.Sorted(slices.Values(a.mouth))
	a.change = max(threshold, 2*sorted[len(sorted)/2])
	a.threshold = max(threshold, widest/4)
	a.add("video / audio sender reports", fmt.Sprintf("%d / %d", len(vsr), len(asr)))
	a.add("mouth: widest opening / open above / changed above", fmt.Sprintf("%.2f / %.2f / %.2f grey levels", widest, a.threshold, a.change))
	return a
}

func (a *analysis) add(k, v string) { a.lines = append(a.lines, [2]string{k, v}) }

func (a *analysis) print(idleMax, threshold float64) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nlip sync from outside: idle frames stray up to %.2f from the idle references (floor %.2f); loud audio: RMS above %.4f\n", idleMax, threshold, a.thrA)
	for _, l := range a.lines {
		fmt.Fprintf(tw, "%s\t%s\n", l[0], l[1])
	}
	_ = tw.Flush()
}

// window is the indices of the frames and packets that arrived in [from, to).
func (a *analysis) window(from, to time.Time) (fi, ai []int) {
	for i, fr := range a.frames {
		if !fr.at.Before(from) && fr.at.Before(to) {
			fi = append(fi, i)
		}
	}
	for i, p := range a.audio {
		if !p.at.Before(from) && p.at.Before(to) {
			ai = append(ai, i)
		}
	}
	return fi, ai
}

// postBursts: the lag of the mouth behind the sound by cross-correlation,
// and per burst the onsets' difference.
func (a *analysis) postBursts(t *testing.T, posted, next time.Time) {
	fi, ai := a.window(posted, next)
	if len(fi) < 50 || len(ai) < 100 {
		t.Fatalf("%d frames and %d packets during the bursts: want more", len(fi), len(ai))
	}
	mouth := series{span: 0.040}
	for _, i := range fi {
		mouth.t, mouth.v = append(mouth.t, a.vt[i]), append(mouth.v, a.mouth[i])
	}
	energy := series{span: 0.020}
	for _, i := range ai {
		energy.t, energy.v = append(energy.t, a.at[i]), append(energy.v, a.energy[i])
	}
	from, to := energy.t[0]+0.3, energy.t[len(energy.t)-1]-0.3
	lag, r := bestLag(mouth, energy, from, to, 300*time.Millisecond, 5*time.Millisecond)
	a.add("cross-correlation: mouth leads sound by (sender clock)", fmt.Sprintf("%v (r = %.2f)", lag, r))

	// Onsets: first loud packet / open (or changed) mouth after a quiet
	// one, paired burst by burst.
	var aOn []int
	for k, i := range ai {
		if a.energy[i] > a.thrA && (k == 0 || a.energy[ai[k-1]] <= a.thrA) {
			aOn = append(aOn, i)
		}
	}
	for _, o := range []struct {
		what string
		thr  float64
	}{{"opens", a.threshold}, {"region starts changing", a.change}} {
		var vOn []int
		for k, i := range fi {
			if a.mouth[i] > o.thr && (k == 0 || a.mouth[fi[k-1]] <= o.thr) {
				vOn = append(vOn, i)
			}
		}
		leads, arrLeads := a.pair(aOn, vOn)
		a.add("bursts: sound onsets / mouth onsets ("+o.what+") / paired", fmt.Sprintf("%d / %d / %d", len(aOn), len(vOn), len(leads)))
		if len(leads) > 0 {
			a.add("mouth "+o.what+" before the sound, sender clock: mean / min / max", stats(leads))
			a.add("mouth "+o.what+" before the sound, arrival: mean / min / max", stats(arrLeads))
		}
		if len(aOn) > 0 && len(vOn) > 0 {
			if o.thr == a.threshold {
				a.add("POST /audio → first loud Opus packet arrives", a.audio[aOn[0]].at.Sub(posted).Round(100*time.Microsecond).String())
			}
			a.add("POST /audio → first frame whose mouth "+o.what+" arrives", a.frames[vOn[0]].at.Sub(posted).Round(100*time.Microsecond).String())
		}
		if o.thr == a.threshold && len(leads) < len(gaps) {
			t.Errorf("%d of %d bursts paired a sound onset with a mouth opening", len(leads), len(gaps)+1)
		}
	}
	if r < 0.5 {
		t.Errorf("mouth and sound correlate at r = %.2f at best (lag %v): want at least 0.5", r, lag)
	}
	if lag < -maxLag || lag > maxLag {
		t.Errorf("the mouth leads the sound by %v (cross-correlation, sender clock): want within ±%v", lag, maxLag)
	}
}

// pair matches each sound onset with the nearest mouth onset within
// 350 ms; it returns by how much the mouth led, on the sender clock and in
// arrival, in ms.
func (a *analysis) pair(aOn, vOn []int) (leads, arrLeads []float64) {
	for _, i := range aOn {
		best := -1
		for _, j := range vOn {
			if d := math.Abs(a.vt[j] - a.at[i]); d < 0.35 && (best < 0 || d < math.Abs(a.vt[best]-a.at[i])) {
				best = j
			}
		}
		if best >= 0 {
			leads = append(leads, (a.at[i]-a.vt[best])*1000)
			arrLeads = append(arrLeads, float64(a.audio[i].at.Sub(a.frames[best].at).Microseconds())/1000)
		}
	}
	return leads, arrLeads
}

// postInterrupt: when lips and sound stop after POST /interrupt.
func (a *analysis) postInterrupt(t *testing.T, posted, interrupted time.Time) {
	fi, ai := a.window(posted, interrupted.Add(time.Hour))
	lastA, lastV := -1, -1
	for _, i := range ai {
		if a.energy[i] > a.thrA {
			lastA = i
		}
	}
	lastC := -1
	for _, i := range fi {
		if a.mouth[i] > a.threshold {
			lastV = i
		}
		if a.mouth[i] > a.change {
			lastC = i
		}
	}
	if lastA < 0 || lastV < 0 {
		t.Fatalf("the interrupted speech: last loud packet %d, last moving frame %d: want both", lastA, lastV)
	}
	soundStop := a.at[lastA] + 0.020
	lipStop := a.vt[lastV] + 0.040
	diff := time.Duration((lipStop - soundStop) * float64(time.Second))
	a.add("after POST /interrupt: last loud packet arrives", a.audio[lastA].at.Sub(interrupted).Round(100*time.Microsecond).String())
	a.add("after POST /interrupt: last moving-mouth frame arrives", a.frames[lastV].at.Sub(interrupted).Round(100*time.Microsecond).String())
	if lastC >= 0 {
		a.add("after POST /interrupt: last frame whose mouth region changed arrives", a.frames[lastC].at.Sub(interrupted).Round(100*time.Microsecond).String())
	}
	a.add("lips stop after the sound, sender clock", diff.Round(100*time.Microsecond).String())
	if diff < -maxLag || diff > maxLag {
		t.Errorf("after the interrupt the lips stop %v after the sound (sender clock): want within ±%v", diff, maxLag)
	}
	if a.audio[lastA].at.Before(interrupted.Add(-500 * time.Millisecond)) {
		t.Errorf("the speech's sound stopped %v before the interrupt: the 3 s burst should still play", interrupted.Sub(a.audio[lastA].at))
	}
}

func stats(v []float64) string {
	var sum float64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range v {
		sum += x
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%.1f / %.1f / %.1f ms", sum/float64(len(v)), lo, hi)
}
