//go:build linux

package browsertest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
)

// frameCounterJS counts the pictures the video element presents
// (requestVideoFrameCallback) in window.__frames: n, the wall-clock time
// (Date.now()) of the last, and streams, the time of the first picture of
// each MediaStream the element played (the viewer gives it a new one per
// connection). The callback survives the switch to a new stream.
const frameCounterJS = `(() => {
	const v = document.getElementById('video');
	if (!v || !v.requestVideoFrameCallback) return false;
	if (window.__frames) return true;
	const fr = window.__frames = {n: 0, last: 0, streams: []};
	let cur = null;
	const tick = () => {
		const now = Date.now();
		if (v.srcObject !== cur) {
			cur = v.srcObject;
			fr.streams.push({at: now, id: cur ? cur.id : ''});
		}
		fr.n++;
		fr.last = now;
		v.requestVideoFrameCallback(tick);
	};
	v.requestVideoFrameCallback(tick);
	return true;
})()`

// frames is window.__frames.
type frames struct {
	N       int64 `json:"n"`
	Last    int64 `json:"last"`
	Streams []struct {
		At int64  `json:"at"`
		ID string `json:"id"`
	} `json:"streams"`
}

// TestViewerFollowsKilledWorker: the demo page watches a session through
// avatarfleet.js; its worker is killed (kill -9); the session is re-placed
// on the other worker under the same id, and the same page, without a
// reload or a click, plays it again: new pictures are presented, the
// video's currentTime advances, and the viewer reported the move. Kill →
// session ready elsewhere and kill → first new picture are logged.
func TestViewerFollowsKilledWorker(t *testing.T) {
	chrome := chromiumPath(t)
	f := binfleet.Start(t, binfleet.Options{
		APIKey:  testKey,
		Workers: []binfleet.WorkerSpec{{ID: "browsertest-a"}, {ID: "browsertest-b"}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sess, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first := waitSession(ctx, t, f, sess.ID, "ready", 60*time.Second, func(s apiv1.Session) bool { return s.State == apiv1.StateReady })

	b := startBrowser(t, chrome)
	ok := b.step(t, "the page plays the session", func(t *testing.T) {
		page := f.URL + "/?key=" + url.QueryEscape(testKey) + "&session=" + url.QueryEscape(sess.ID) + "&watch=1&muted=1"
		if err := b.do(30*time.Second, chromedp.Navigate(page)); err != nil {
			t.Fatalf("load the demo page: %v", err)
		}
		b.waitJS(t, "the page's viewer is connected", 60*time.Second,
			`avatarDemo.viewer && avatarDemo.viewer.state === 'connected'`)
		if !evalJS[bool](t, b, frameCounterJS) {
			t.Fatal("the video element has no requestVideoFrameCallback")
		}
		advancing(t, b, 20, 15*time.Second)
	})
	if !ok {
		t.FailNow()
	}
	// A second viewer plays the session with avatarfleet.js and the viewer
	// token alone (no API key, none of the demo page's code) on a <video>
	// of its own. It shares the demo page's tab: a background tab does not
	// start playing until it is shown.
	bare := b
	ok = bare.step(t, "a bare viewer plays it with the viewer token alone", func(t *testing.T) {
		if !evalJS[bool](t, bare, bareViewerJS(sess.ID, sess.ViewerToken), chromedp.EvalAwaitPromise) {
			t.Fatal("the bare viewer did not start")
		}
		bare.waitJS(t, "the bare viewer is connected", 60*time.Second, `window.bare.v.state === 'connected'`)
		if !evalJS[bool](t, bare, `document.getElementById('video').srcObject !== document.getElementById('bare-video').srcObject`) {
			t.Error("the two viewers play the same stream")
		}
		bare.waitJS(t, "the bare viewer decodes pictures", 30*time.Second, decodedJS+`.then(n => n > 10)`, chromedp.EvalAwaitPromise)
	})
	if !ok {
		t.FailNow()
	}

	lost := first.WorkerID
	other := "browsertest-a"
	if lost == other {
		other = "browsertest-b"
	}
	killed := f.KillWorker(t, lost)
	t.Logf("killed worker %s (kill -9); the session should move to %s", lost, other)

	var moved apiv1.Session
	b.step(t, "the session is ready on the other worker, same id", func(t *testing.T) {
		moved = waitSession(ctx, t, f, sess.ID, "ready on "+other, 90*time.Second, func(s apiv1.Session) bool {
			return s.State == apiv1.StateReady && s.WorkerID == other
		})
		t.Logf("kill → session ready on %s: %v", moved.WorkerID, time.Since(killed).Round(time.Millisecond))
	})

	b.step(t, "the same page plays it again", func(t *testing.T) {
		b.waitJS(t, "a picture of a new connection's stream after the kill", 60*time.Second,
			fmt.Sprintf(`window.__frames.streams.some(s => s.at > %d && s.id)`, killed.UnixMilli()))
		fr := evalJS[frames](t, b, `window.__frames`)
		for _, s := range fr.Streams {
			if s.At > killed.UnixMilli() && s.ID != "" {
				t.Logf("kill → first picture of the new connection presented: %d ms", s.At-killed.UnixMilli())
				break
			}
		}
		advancing(t, b, 25, 20*time.Second)
		c0 := evalJS[float64](t, b, `document.getElementById('video').currentTime`)
		time.Sleep(1500 * time.Millisecond)
		c1 := evalJS[float64](t, b, `document.getElementById('video').currentTime`)
		if c1 <= c0 {
			t.Errorf("video.currentTime did not advance in 1.5 s after the move: %.3f → %.3f", c0, c1)
		}
		if st := evalJS[string](t, b, `avatarDemo.viewer ? avatarDemo.viewer.state : 'none'`); st != "connected" {
			t.Errorf("viewer state %q, want connected", st)
		}
		if n := evalJS[int](t, b, `avatarDemo.viewer.connects`); n < 2 {
			t.Errorf("the viewer connected %d times, want a reconnect", n)
		}
		// The viewer heard of the move from the session's event stream
		// (GET /v1/sessions/{id}/events with the viewer token).
		to := evalJS[string](t, b, `(avatarDemo.viewerEvents.find(e => e.type === 'moved') || {detail: {}}).detail.to || ''`)
		if to != other {
			t.Errorf("the viewer's moved event names worker %q, want %s; its events: %s", to, other,
				evalJS[string](t, b, `JSON.stringify(avatarDemo.viewerEvents.map(e => [e.type, e.at - `+fmt.Sprint(killed.UnixMilli())+`, e.detail]))`))
		}
		t.Logf("viewer events after the kill: %s", evalJS[string](t, b, fmt.Sprintf(
			`JSON.stringify(avatarDemo.viewerEvents.filter(e => e.at > %d).map(e => [e.type, e.at - %d, e.detail.reason || e.detail.state || e.detail.to || '']))`,
			killed.UnixMilli(), killed.UnixMilli())))
	})

	bare.step(t, "the bare viewer follows the move too", func(t *testing.T) {
		bare.waitJS(t, "the bare viewer's moved event names "+other, 30*time.Second,
			fmt.Sprintf(`window.bare.events.some(e => e.type === 'moved' && e.detail.to === %q)`, other))
		bare.waitJS(t, "the bare viewer is connected again", 30*time.Second,
			`window.bare.v.state === 'connected' && window.bare.v.connects >= 2`)
		// getStats is per connection: these pictures came over the new one.
		bare.waitJS(t, "the bare viewer decodes pictures from the new worker", 30*time.Second, decodedJS+`.then(n => n > 10)`, chromedp.EvalAwaitPromise)
	})

	if err := f.DeleteSession(ctx, sess.ID); err != nil {
		t.Error(err)
	}
	b.waitJS(t, "the viewer ends with the session", 30*time.Second,
		`!avatarDemo.viewer && avatarDemo.session.state === 'ended'`)
	bare.waitJS(t, "the bare viewer ends with the session (ended, reason deleted)", 30*time.Second,
		`window.bare.v.state === 'ended' && window.bare.events.some(e => e.type === 'ended' && e.detail.reason === 'deleted')`)
}

// bareViewerJS starts an AvatarViewer of avatarfleet.js on a new <video>
// in window.bare: {v, events}, events holding each viewer event's type,
// time and reason, state or worker.
func bareViewerJS(sessionID, token string) string {
	return fmt.Sprintf(`(async () => {
	const { AvatarViewer } = await import('/avatarfleet.js');
	const video = document.createElement('video');
	video.id = 'bare-video';
	video.muted = true;
	video.autoplay = true;
	video.playsInline = true;
	document.body.append(video);
	const v = new AvatarViewer({ sessionId: %q, token: %q, video });
	const bare = window.bare = { v, events: [] };
	for (const type of ['state', 'connected', 'reconnecting', 'moved', 'ended', 'error']) {
		v.addEventListener(type, (e) => bare.events.push({ type, at: Date.now(),
			detail: { reason: e.detail.reason, state: e.detail.state, to: e.detail.to } }));
	}
	v.start();
	return true;
})()`, sessionID, token)
}

// decodedJS is a promise of the frames decoded on window.bare's current
// connection.
const decodedJS = `window.bare.v.pc.getStats().then(r => {
	let n = 0;
	r.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded || 0; });
	return n;
})`

// advancing waits until the video element presents at least n more
// pictures.
func advancing(t *testing.T, b *browser, n int, timeout time.Duration) {
	t.Helper()
	start := evalJS[frames](t, b, `window.__frames`)
	b.waitJS(t, fmt.Sprintf("%d more pictures presented", n), timeout, fmt.Sprintf(`window.__frames.n >= %d`, start.N+int64(n)))
}

// waitSession polls GET /v1/sessions/{id} until ok holds.
func waitSession(ctx context.Context, t *testing.T, f *binfleet.Fleet, id, what string, timeout time.Duration, ok func(apiv1.Session) bool) apiv1.Session {
	t.Helper()
	var last apiv1.Session
	f.WaitUntil(t, "session "+id+" "+what, timeout, func() error {
		s, err := f.GetSession(ctx, id)
		if err != nil {
			return err
		}
		last = s
		if !ok(s) {
			return fmt.Errorf("session is %s on %q (%s %s)", s.State, s.WorkerID, s.EndReason, s.EndMessage)
		}
		return nil
	})
	return last
}
