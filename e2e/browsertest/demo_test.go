//go:build linux

package browsertest

import (
	"context"
	"fmt"
	"image"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
)

const (
	testKey  = "browsertest-key-0123456789abcdef"
	workerID = "browsertest-worker"
	// avatarSide is the default avatar's frame size; face coordinates of
	// avatar.DefaultFace are in its pixels.
	avatarSide = 512
	// minFPS is the lowest decoded frame rate accepted for 25 fps video.
	minFPS = 18
	// speech is long enough to keep the mouth busy for several seconds.
	speech = "Hello there! I am the astronaut of AvatarFleet, and I can talk about the stars, the moon and the planets all day long."
)

// TestDemoPageInBrowser starts bin/controlplane (embedded etcd and NATS) and
// bin/worker on the CPU, then uses the demo page in headless Chromium as an
// operator would: create a session, watch it (WHEP), make it speak and see
// the mouth move, publish the fake microphone (WHIP), delete the session.
func TestDemoPageInBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	base := binfleet.Start(t, binfleet.Options{
		APIKey:  testKey,
		Workers: []binfleet.WorkerSpec{{ID: workerID, SlotsPerGPU: 1}},
	}).URL

	b := startBrowser(t, chrome)
	b.step(t, "open the demo page", func(t *testing.T) {
		if err := b.do(30*time.Second, chromedp.Navigate(base+"/?key="+url.QueryEscape(testKey))); err != nil {
			t.Fatalf("load %s: %v", base, err)
		}
		if err := b.do(10*time.Second, chromedp.WaitVisible(chromedp.CSS("#create"))); err != nil {
			t.Fatalf("the page has no #create button: %v", err)
		}
		title := run(t, b, chromedp.Title())
		if !strings.Contains(title, "AvatarFleet") {
			t.Errorf("page title %q", title)
		}
		if loc := run(t, b, chromedp.Location()); strings.Contains(loc, testKey) {
			t.Errorf("the API key stays in the address bar: %s", loc)
		}
		b.waitJS(t, "the key is set and the event stream connected", 15*time.Second,
			`avatarDemo.hasKey && avatarDemo.sse.connected`)
	})

	var voice string
	b.step(t, "pick the avatar and voice from the fleet's lists", func(t *testing.T) {
		// The selects are filled from GET /v1/avatars and GET /v1/voices,
		// and the chosen avatar's preview (a JPEG of at most 256 px) shows.
		b.waitJS(t, "the lists are loaded", 15*time.Second,
			`avatarDemo.catalog.loaded && avatarDemo.catalog.avatars.some(a => a.name === 'default') &&
			 [...document.querySelectorAll('#avatar option')].some(o => o.value === 'default') &&
			 document.querySelectorAll('#voice option').length === avatarDemo.catalog.voices.length`)
		if got := evalJS[string](t, b, `document.querySelector('#avatar').value`); got != "default" {
			t.Errorf("#avatar selects %q, want default", got)
		}
		b.waitJS(t, "the preview shows", 15*time.Second,
			`avatarDemo.catalog.preview && avatarDemo.catalog.preview.status === 200 && avatarDemo.catalog.preview.width > 0 &&
			 !document.querySelector('#avatar-preview').hidden && document.querySelector('#avatar-preview').naturalWidth > 0`)
		if w := evalJS[int](t, b, `avatarDemo.catalog.preview.width`); w != 256 {
			t.Errorf("preview %d px wide, want 256 (the 512 px default avatar halved)", w)
		}
		// Pick a voice other than the default when the worker offers one.
		voice = evalJS[string](t, b, `(() => {
			const s = document.querySelector('#voice');
			const o = [...s.options].find(o => o.value === 'en-us') || [...s.options].find(o => o.value === 'default');
			s.value = o.value;
			s.dispatchEvent(new Event('change'));
			return s.value;
		})()`)
		if voice == "" {
			t.Fatal("no voice to pick")
		}
		t.Logf("picked avatar default, voice %q, from %d avatars and %d voices", voice,
			evalJS[int](t, b, `avatarDemo.catalog.avatars.length`), evalJS[int](t, b, `avatarDemo.catalog.voices.length`))
	})

	ok := b.step(t, "create a session", func(t *testing.T) {
		b.click(t, "#create")
		b.waitJS(t, "the session is ready", 60*time.Second,
			`avatarDemo.session && avatarDemo.session.state === 'ready'`)
		if got := b.text(t, "#s-state"); got != "ready" {
			t.Errorf("#s-state shows %q", got)
		}
		if got := b.text(t, "#s-worker"); got != workerID {
			t.Errorf("#s-worker shows %q, want %q", got, workerID)
		}
		if got, want := b.text(t, "#s-avatar"), "default / "+voice; voice != "" && got != want {
			t.Errorf("#s-avatar shows %q, want %q (the choices picked)", got, want)
		}
		b.waitJS(t, "the SSE log shows session.ready", 15*time.Second,
			`avatarDemo.events.some(e => e.session_id === avatarDemo.sessionId && e.type === 'session.ready') &&
			 [...document.querySelectorAll('#log li')].some(li => li.textContent.includes('session.ready'))`)
	})
	if !ok {
		t.FailNow()
	}

	b.step(t, "speak and interrupt through the page", func(t *testing.T) {
		b.say(t, "Hello.", false)
		b.click(t, "#interrupt")
		b.waitJS(t, "interrupt answered", 15*time.Second, `avatarDemo.lastInterrupt.status !== 0`)
		if st := evalJS[int](t, b, `avatarDemo.lastInterrupt.status`); st != 204 {
			t.Errorf("interrupt answered %d, want 204 (%s)", st, evalJS[string](t, b, `avatarDemo.lastInterrupt.error || ''`))
		}
	})

	watching := b.step(t, "watch over WHEP at 25 fps with audio", func(t *testing.T) {
		b.click(t, "#watch")
		b.waitJS(t, "the WHEP POST answered", 30*time.Second, `avatarDemo.whep.status !== 0 || avatarDemo.whep.error !== ''`)
		if st := evalJS[int](t, b, `avatarDemo.whep.status`); st != 201 {
			t.Fatalf("WHEP POST answered %d, want 201: %s", st, evalJS[string](t, b, `avatarDemo.whep.error`))
		}
		if loc := evalJS[string](t, b, `avatarDemo.whep.location`); !strings.Contains(loc, "/whep/") {
			t.Errorf("WHEP Location %q, want /v1/sessions/{id}/whep/{viewer}", loc)
		}
		b.waitJS(t, "the viewer connection is up", 30*time.Second,
			`avatarDemo.pc && avatarDemo.pc.connectionState === 'connected'`)
		b.waitJS(t, "frames are decoded", 30*time.Second, statsJS+`.then(s => s.framesDecoded > 0)`, chromedp.EvalAwaitPromise)
		time.Sleep(time.Second) // past the first keyframe's start-up
		s0 := evalJS[mediaStats](t, b, statsJS, chromedp.EvalAwaitPromise)
		time.Sleep(3 * time.Second)
		s1 := evalJS[mediaStats](t, b, statsJS, chromedp.EvalAwaitPromise)
		dt := (s1.Timestamp - s0.Timestamp) / 1000
		fps := float64(s1.FramesDecoded-s0.FramesDecoded) / dt
		t.Logf("over %.2f s: %.1f fps decoded (%dx%d), %d audio samples, %d audio packets",
			dt, fps, s1.Width, s1.Height, s1.AudioSamples-s0.AudioSamples, s1.AudioPackets-s0.AudioPackets)
		if fps < minFPS {
			t.Errorf("decoded %.1f fps, want at least %d of the 25", fps, minFPS)
		}
		if s1.Width != avatarSide || s1.Height != avatarSide {
			t.Errorf("video is %dx%d, want %dx%d", s1.Width, s1.Height, avatarSide, avatarSide)
		}
		if s1.AudioPackets <= s0.AudioPackets {
			t.Errorf("no audio packets arrived in %.1f s", dt)
		}
		if s1.AudioSamples <= s0.AudioSamples {
			t.Errorf("audio totalSamplesReceived did not grow in %.1f s (%d)", dt, s1.AudioSamples)
		}
		b.waitJS(t, "the page shows its own fps", 10*time.Second, `avatarDemo.local.fps > 0`)
	})

	b.step(t, "the mouth moves while the avatar speaks", func(t *testing.T) {
		if !watching {
			t.Fatal("no video to look at: the WHEP step failed")
		}
		// Note whether the speaking indicator ever reads "speaking".
		evalJS[bool](t, b, `(() => { const el = document.getElementById('speaking'); window.sawSpeaking = false;
			new MutationObserver(() => { if (el.textContent === 'speaking') window.sawSpeaking = true; })
				.observe(el, { childList: true, characterData: true, subtree: true }); return true; })()`)
		checkLipSync(t, b)
		b.waitJS(t, "the SSE log shows speaking started and ended", 30*time.Second,
			`avatarDemo.events.some(e => e.session_id === avatarDemo.sessionId && e.type === 'session.speaking_started' && e.media_time_ms != null) &&
			 avatarDemo.events.some(e => e.session_id === avatarDemo.sessionId && e.type === 'session.speaking_ended')`)
		b.waitJS(t, "the indicator is back to silent", 10*time.Second, `document.getElementById('speaking').textContent === 'silent'`)
		if !evalJS[bool](t, b, `window.sawSpeaking`) {
			t.Error("the speaking indicator never read 'speaking'")
		}
	})

	b.step(t, "microphone over WHIP", func(t *testing.T) {
		b.click(t, "#mic")
		b.waitJS(t, "the WHIP POST answered", 30*time.Second, `avatarDemo.mic.status !== 0 || avatarDemo.mic.error !== ''`)
		if st := evalJS[int](t, b, `avatarDemo.mic.status`); st != 201 {
			t.Fatalf("WHIP POST answered %d, want 201: %s", st, evalJS[string](t, b, `avatarDemo.mic.error`))
		}
		b.waitJS(t, "the publisher connection is up", 30*time.Second,
			`avatarDemo.mic.pc && avatarDemo.mic.pc.connectionState === 'connected'`)
		b.click(t, "#mic")
		b.waitJS(t, "the publisher is deleted", 15*time.Second, `avatarDemo.mic.deleteStatus !== 0`)
		if st := evalJS[int](t, b, `avatarDemo.mic.deleteStatus`); st != 200 && st != 204 {
			t.Errorf("DELETE of the WHIP resource answered %d", st)
		}
	})

	b.step(t, "delete the session", func(t *testing.T) {
		id := evalJS[string](t, b, `avatarDemo.sessionId`)
		b.click(t, "#delete")
		b.waitJS(t, "the session has ended", 30*time.Second,
			`avatarDemo.session.state === 'ended' && avatarDemo.session.end_reason === 'deleted'`)
		b.waitJS(t, "the SSE log shows session.ended", 15*time.Second,
			`avatarDemo.events.some(e => e.session_id === avatarDemo.sessionId && e.type === 'session.ended')`)
		if st := evalJS[int](t, b, `avatarDemo.lastDelete.status`); st != 204 {
			t.Errorf("DELETE answered %d, want 204", st)
		}
		var s apiv1.Session
		if err := binfleet.APIGet(context.Background(), base, testKey, "/v1/sessions/"+id, &s); err != nil {
			t.Fatal(err)
		}
		if s.State != apiv1.StateEnded || s.EndReason != apiv1.ReasonDeleted {
			t.Errorf("after the page deleted it, the API shows the session %s (%s)", s.State, s.EndReason)
		}
		if !evalJS[bool](t, b, `document.getElementById('watch').disabled && document.getElementById('speak').disabled`) {
			t.Error("watch and speak stay enabled for an ended session")
		}
	})
}

// browser is one headless Chromium with one tab.
type browser struct {
	ctx context.Context

	mu      sync.Mutex
	console []string
}

// startBrowser starts Chromium; t.Cleanup closes it (and, when the test
// failed, logs the page's console).
func startBrowser(t *testing.T, chrome string) *browser {
	t.Helper()
	dir := t.TempDir()
	chromeLog, err := os.Create(filepath.Join(dir, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("mute-audio", false), // audio must play out for totalSamplesReceived
		chromedp.NoSandbox,                 // root in CI
		chromedp.DisableGPU,
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// The worker's ICE candidates are 127.0.0.1; let the browser use
		// loopback and show its real host addresses rather than mDNS names.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,WebRtcHideLocalIpsWithMdns"),
		chromedp.WindowSize(1280, 1024),
		chromedp.CombinedOutput(chromeLog),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &browser{ctx: ctx}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx) // closes the browser and waits for it
		cancel()
		cancelAlloc()
		wg.Wait()
		chromeLog.Close()
		if t.Failed() {
			b.mu.Lock()
			t.Logf("--- browser console ---\n%s", strings.Join(b.console, "\n"))
			b.mu.Unlock()
			t.Logf("--- last lines of chromium's output (D-Bus noise left out) ---\n%s", binfleet.TailWithout(chromeLog.Name(), 30, "dbus/", "unexpected operator"))
		}
	})
	// The first Run starts the browser; it must not have a timeout.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v\n%s", chrome, err, binfleet.Tail(chromeLog.Name(), 30))
	}
	console := chromedp.Console(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m, err := range console {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m.String())
			b.mu.Unlock()
		}
	}()
	return b
}

// step runs one part of the scenario as a subtest; on failure it logs the
// page's state and log.
func (b *browser) step(t *testing.T, name string, f func(t *testing.T)) bool {
	return t.Run(name, func(t *testing.T) {
		defer func() {
			if t.Failed() {
				t.Logf("page state: %s", b.pageState())
			}
		}()
		f(t)
	})
}

func (b *browser) do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

func run[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func evalJS[T any](t *testing.T, b *browser, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript condition every 200 ms until it holds.
func (b *browser) waitJS(t *testing.T, what string, timeout time.Duration, expr string, opts ...chromedp.EvaluateOption) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")", opts...))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("%s: not within %v (%v)", what, timeout, lastErr)
	}
	t.Fatalf("%s: not within %v", what, timeout)
}

func (b *browser) click(t *testing.T, sel string) {
	t.Helper()
	if err := b.do(15*time.Second, chromedp.WaitEnabled(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
}

func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	return strings.TrimSpace(run(t, b, chromedp.TextContent(chromedp.CSS(sel))))
}

// say types text into the page's speak box and presses Speak; it waits
// for the 202.
func (b *browser) say(t *testing.T, text string, interrupt bool) {
	t.Helper()
	before := evalJS[float64](t, b, `avatarDemo.lastSpeak.at || 0`)
	if err := b.do(10*time.Second, chromedp.SetValue(chromedp.CSS("#text"), text)); err != nil {
		t.Fatal(err)
	}
	if evalJS[bool](t, b, `document.getElementById('speak-interrupt').checked`) != interrupt {
		b.click(t, "#speak-interrupt")
	}
	b.click(t, "#speak")
	b.waitJS(t, "speak answered", 15*time.Second, fmt.Sprintf(`(avatarDemo.lastSpeak.at || 0) > %v`, before))
	if st := evalJS[int](t, b, `avatarDemo.lastSpeak.status`); st != 202 {
		t.Fatalf("speak answered %d, want 202: %s", st, evalJS[string](t, b, `avatarDemo.lastSpeak.error || ''`))
	}
}

// pageState is a summary of window.avatarDemo and the page's log.
func (b *browser) pageState() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		session: avatarDemo.session, whep: avatarDemo.whep, local: avatarDemo.local,
		serverStats: avatarDemo.serverStats, sse: {connected: avatarDemo.sse.connected},
		mic: {on: avatarDemo.mic.on, status: avatarDemo.mic.status, error: avatarDemo.mic.error,
		      deleteStatus: avatarDemo.mic.deleteStatus, state: avatarDemo.mic.pc && avatarDemo.mic.pc.connectionState},
		pc: avatarDemo.pc && {connection: avatarDemo.pc.connectionState, ice: avatarDemo.pc.iceConnectionState},
		lastSpeak: avatarDemo.lastSpeak, lastInterrupt: avatarDemo.lastInterrupt, lastDelete: avatarDemo.lastDelete,
		log: [...document.querySelectorAll('#log li')].slice(-25).map(li => li.textContent)}, null, 1)`))
	if err != nil {
		return "unavailable: " + err.Error()
	}
	return s
}

// mediaStats are the figures of the viewer's inbound RTP streams.
type mediaStats struct {
	Timestamp     float64 `json:"timestamp"` // ms
	FramesDecoded int64   `json:"framesDecoded"`
	Width         int     `json:"width"`
	Height        int     `json:"height"`
	AudioSamples  int64   `json:"audioSamples"`
	AudioPackets  int64   `json:"audioPackets"`
}

// statsJS reads avatarDemo.pc.getStats() into a mediaStats.
const statsJS = `avatarDemo.pc.getStats().then(r => {
	const out = {timestamp: performance.now(), framesDecoded: 0, width: 0, height: 0, audioSamples: 0, audioPackets: 0};
	r.forEach(s => {
		if (s.type !== 'inbound-rtp') return;
		if (s.kind === 'video') {
			out.timestamp = s.timestamp;
			out.framesDecoded = s.framesDecoded || 0;
			out.width = s.frameWidth || 0;
			out.height = s.frameHeight || 0;
		} else if (s.kind === 'audio') {
			out.audioSamples = s.totalSamplesReceived || 0;
			out.audioPackets = s.packetsReceived || 0;
		}
	});
	return out;
})`

// mouthRegion is the lower middle of the default avatar's face box (mouth
// and chin), in avatar pixels, and a region of the upper face for contrast.
func mouthRegion() (mouth, upper image.Rectangle) {
	f := avatar.DefaultFace()
	w, h := f.Dx(), f.Dy()
	mouth = image.Rect(f.Min.X+w/4, f.Min.Y+h*3/5, f.Max.X-w/4, f.Max.Y+h/10)
	upper = image.Rect(f.Min.X+w/4, f.Min.Y+h/6, f.Max.X-w/4, f.Min.Y+h*2/5)
	return mouth, upper
}

// capture is the luma of the video's current picture in a region.
type capture struct {
	Luma []float64 `json:"luma"`
}

// captureJS draws the video element on a canvas and returns the luma of
// the rectangle (x, y, w, h in avatar pixels, scaled to the video's size).
func captureJS(r image.Rectangle) string {
	return fmt.Sprintf(`(() => {
	const v = document.getElementById('video');
	if (!v || v.readyState < 2 || !v.videoWidth) return null;
	const c = window.__browsertestCanvas || (window.__browsertestCanvas = document.createElement('canvas'));
	c.width = v.videoWidth; c.height = v.videoHeight;
	const g = c.getContext('2d', {willReadFrequently: true});
	g.drawImage(v, 0, 0);
	const s = v.videoWidth / %d;
	const x = Math.round(%d * s), y = Math.round(%d * s), w = Math.round(%d * s), h = Math.round(%d * s);
	const d = g.getImageData(x, y, w, h).data;
	const luma = new Array(w * h);
	for (let i = 0; i < w * h; i++) luma[i] = 0.299 * d[4*i] + 0.587 * d[4*i+1] + 0.114 * d[4*i+2];
	return {luma};
})()`, avatarSide, r.Min.X, r.Min.Y, r.Dx(), r.Dy())
}

// meanAbsDiff is the mean absolute difference of two captures (0..255).
func meanAbsDiff(a, b []float64) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return math.Inf(1)
	}
	var sum float64
	for i := range a {
		sum += math.Abs(a[i] - b[i])
	}
	return sum / float64(len(a))
}

// checkLipSync compares the mouth region of decoded pictures with an idle
// one: while idle the avatar only breathes (its face within a pixel), so
// the region hardly changes; while it speaks, the model warps the lower
// face, so it changes several times as much.
func checkLipSync(t *testing.T, b *browser) {
	mouth, upper := mouthRegion()
	grab := func() (m, u []float64) {
		mc := evalJS[*capture](t, b, captureJS(mouth))
		uc := evalJS[*capture](t, b, captureJS(upper))
		if mc == nil || uc == nil {
			t.Fatal("the video element has no picture to draw")
		}
		return mc.Luma, uc.Luma
	}
	// Idle: 2 s of pictures against the first.
	refMouth, refUpper := grab()
	var idleMouth, idleUpper float64
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		m, u := grab()
		idleMouth = max(idleMouth, meanAbsDiff(m, refMouth))
		idleUpper = max(idleUpper, meanAbsDiff(u, refUpper))
	}
	threshold := max(4, 2.5*idleMouth)

	b.say(t, speech, true)
	var peakMouth, peakUpper float64
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && peakMouth < threshold {
		time.Sleep(80 * time.Millisecond)
		m, u := grab()
		peakMouth = max(peakMouth, meanAbsDiff(m, refMouth))
		peakUpper = max(peakUpper, meanAbsDiff(u, refUpper))
	}
	t.Logf("mouth region %v: idle change up to %.2f, while speaking %.2f (threshold %.2f); upper face %v: idle %.2f, speaking %.2f",
		mouth, idleMouth, peakMouth, threshold, upper, idleUpper, peakUpper)
	if peakMouth < threshold {
		t.Errorf("the mouth region changed by at most %.2f while speaking, idle %.2f: the lips do not move", peakMouth, idleMouth)
	}
	b.click(t, "#interrupt")
}
