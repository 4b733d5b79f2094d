package openapi_test

import (
	"bytes"
	"image"
	"image/jpeg"
	"net/url"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
)

func TestMain(m *testing.M) { testfleet.VerifyTestMain(m) }

func intp(v int) *int { return &v }

// offer makes a real Pion client offer: a WHEP viewer (receives video and
// audio) or a WHIP publisher (sends audio).
func offer(t *testing.T, publisher bool) string {
	t.Helper()
	api, err := testfleet.NewLoopbackAPI()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	if publisher {
		mic, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "mic")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.AddTransceiverFromTrack(mic, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
			if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				t.Fatal(err)
			}
		}
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gathered:
	case <-time.After(10 * time.Second):
		t.Fatal("ICE gathering did not complete")
	}
	return pc.LocalDescription().SDP
}

// TestSpecMatchesRunningControlPlane drives a fleet through every route of
// the spec, the successes and the refusals a client meets, and validates
// every request and every response (status, headers, body, error code)
// against the spec the control plane serves; event streams' data is
// validated event by event. Requests the server refuses as malformed must
// be ones the spec forbids too.
func TestSpecMatchesRunningControlPlane(t *testing.T) {
	rate := 0.1
	sfu := testfleet.NewPionAnswerer(t)
	f := testfleet.Start(t, testfleet.Options{
		Workers: []testfleet.WorkerSpec{{ID: "w0", Signaling: sfu, SlotsPerGPU: 8,
			Avatars: []string{"default"}, Voices: []string{"default"}, TTSEngine: "espeak", Previews: preview(t)}},
		KeyLimits: map[string]auth.LimitOverrides{
			testfleet.OtherKey: {MaxSessions: intp(1), Rate: &rate, Burst: intp(4)},
		},
	})
	c := newChecker(t, f)
	sk, ak := testfleet.SessionsKey, testfleet.AdminKey
	jsonCT := []string{"Content-Type", "application/json"}
	sdpCT := []string{"Content-Type", "application/sdp"}

	// Operations: probes, metrics, the demo, the spec itself.
	for _, cl := range []call{
		{method: "GET", path: "/healthz", want: 200},
		{method: "GET", path: "/readyz", want: 200},
		{method: "GET", path: "/metrics", want: 200},
		{method: "GET", path: "/openapi.json", want: 200},
		{method: "GET", path: "/", want: 200},
		{method: "GET", path: "/avatarfleet.js", want: 200},
		{method: "GET", path: "/demo/demo.js", want: 200},
		{method: "GET", path: "/demo/demo.css", want: 200},
		{method: "GET", path: "/demo/catalog.js", want: 200},
		{method: "GET", path: "/demo/secrets.txt", want: 404, request: invalid},
	} {
		c.do(cl)
	}

	// Lifecycle events of every session, as the admin sees them.
	events := c.stream(call{method: "GET", path: "/v1/events", key: ak})

	// Create: with a body, without one, idempotently.
	var s apiv1.Session
	r := c.do(jsonCall("POST", "/v1/sessions", sk, map[string]any{"labels": map[string]string{"team": "docs"}, "idle_timeout_seconds": 600}, 201))
	r.JSON(t, &s)
	c.do(call{method: "POST", path: "/v1/sessions", key: sk, want: 201})
	idem := jsonCall("POST", "/v1/sessions", sk, map[string]any{"voice": "default"}, 201)
	idem.headers = append(idem.headers, "Idempotency-Key", "req-42")
	first := c.do(idem)
	if again := c.do(idem); string(again.Body) == "" || string(first.Body) == "" {
		t.Fatal("idempotent create answered no session")
	}
	conflict := jsonCall("POST", "/v1/sessions", sk, map[string]any{"voice": "default", "idle_timeout_seconds": 30}, 409)
	conflict.headers, conflict.code = idem.headers, apiv1.CodeConflict
	c.do(conflict)
	ready := events.next("session.ready", 20*time.Second)
	if ready["session"] == nil {
		t.Fatalf("session.ready without its session: %v", ready)
	}

	// Create refusals.
	for _, cl := range []call{
		{method: "POST", path: "/v1/sessions", want: 401, request: invalid},
		{method: "POST", path: "/v1/sessions", key: "not-a-key-0123456789", want: 401},
		withReq(jsonCall("POST", "/v1/sessions", sk, map[string]any{"idle_timeout_seconds": 1}, 400), invalid),
		withReq(jsonCall("POST", "/v1/sessions", sk, map[string]any{"avatar": "../etc"}, 400), invalid),
		withReq(jsonCall("POST", "/v1/sessions", sk, map[string]any{"restart_policy": "always"}, 400), invalid),
		withReq(jsonCall("POST", "/v1/sessions", sk, map[string]any{"colour": "blue"}, 400), invalid),
		jsonCall("POST", "/v1/sessions", sk, map[string]any{"avatar": "nobody"}, 400),
		{method: "POST", path: "/v1/sessions", key: sk, body: []byte("avatar=x"), headers: []string{"Content-Type", "text/plain"}, want: 415, request: invalid},
		{method: "POST", path: "/v1/sessions", key: sk, body: []byte(`{"avatar":`), headers: jsonCT, want: 400, request: invalid},
	} {
		c.do(cl)
	}

	// Read and list.
	c.do(call{method: "GET", path: "/v1/sessions/" + s.ID, key: sk, want: 200})
	c.do(call{method: "GET", path: "/v1/sessions/" + s.ID, key: ak, want: 200})
	c.do(call{method: "GET", path: "/v1/sessions/sess_missing", key: sk, want: 404})
	c.do(call{method: "GET", path: "/v1/sessions/bad%21id", key: sk, want: 404, request: invalid})
	c.do(call{method: "GET", path: "/v1/sessions", key: sk, want: 200})
	var page apiv1.SessionList
	c.do(call{method: "GET", path: "/v1/sessions?limit=1&state=ready", key: sk, want: 200}).JSON(t, &page)
	if page.NextPageToken == "" {
		t.Fatalf("a page of 1 of several sessions has no next_page_token: %+v", page)
	}
	c.do(call{method: "GET", path: "/v1/sessions?limit=1&page_token=" + url.QueryEscape(page.NextPageToken), key: sk, want: 200})
	c.do(call{method: "GET", path: "/v1/sessions?limit=0", key: sk, want: 400, request: invalid})
	c.do(call{method: "GET", path: "/v1/sessions?state=sleeping", key: sk, want: 400, request: invalid})
	c.do(call{method: "GET", path: "/v1/sessions?page_token=forged", key: sk, want: 400})

	// Speech.
	speak := "/v1/sessions/" + s.ID + "/speak"
	c.do(jsonCall("POST", speak, sk, map[string]any{"text": "Hello from the spec test."}, 202))
	c.do(jsonCall("POST", speak, sk, map[string]any{"text": "Again.", "interrupt": true}, 202))
	c.do(withReq(jsonCall("POST", speak, sk, map[string]any{"text": ""}, 400), invalid))
	c.do(withReq(jsonCall("POST", speak, sk, map[string]any{}, 400), invalid))
	c.do(call{method: "POST", path: speak, key: sk, body: []byte("hi"), headers: []string{"Content-Type", "text/plain"}, want: 415, request: invalid})
	c.do(jsonCall("POST", "/v1/sessions/sess_missing/speak", sk, map[string]any{"text": "hi"}, 404))
	audio := "/v1/sessions/" + s.ID + "/audio"
	c.do(call{method: "POST", path: audio, key: sk, body: wav.Encode16(make([]float32, 1600), 16000), headers: []string{"Content-Type", "audio/wav"}, want: 202})
	c.do(call{method: "POST", path: audio, key: sk, body: []byte("RIFF....WAVEjunkjunkjunkjunkjunkjunkjunkjunkjunk"), headers: []string{"Content-Type", "audio/wav"}, want: 400})
	c.do(call{method: "POST", path: audio, key: sk, body: []byte("x"), headers: []string{"Content-Type", "audio/mpeg"}, want: 415, request: invalid})
	c.do(call{method: "POST", path: "/v1/sessions/" + s.ID + "/interrupt", key: sk, want: 204})

	// Recordings: this fleet's stand-in runtime does not record (the
	// recording itself is e2e/recording's), so a start is refused; an
	// unknown recording is not found.
	recs := "/v1/sessions/" + s.ID + "/recordings"
	c.do(call{method: "POST", path: recs, key: sk, want: 409})
	c.do(call{method: "GET", path: recs + "/rec_missing", key: sk, want: 404})
	c.do(call{method: "DELETE", path: recs + "/rec_missing", key: sk, want: 404})

	// Tokens.
	tokens := "/v1/sessions/" + s.ID + "/tokens"
	var pub apiv1.Token
	c.do(jsonCall("POST", tokens, sk, map[string]any{"grants": []string{"publish", "subscribe"}, "ttl_seconds": 600}, 201)).JSON(t, &pub)
	c.do(withReq(jsonCall("POST", tokens, sk, map[string]any{"grants": []string{}}, 400), invalid))
	c.do(withReq(jsonCall("POST", tokens, sk, map[string]any{"grants": []string{"admin"}}, 400), invalid))
	c.do(withReq(jsonCall("POST", tokens, sk, map[string]any{"grants": []string{"subscribe"}, "ttl_seconds": 5}, 400), invalid))
	c.do(jsonCall("POST", tokens, ak, map[string]any{"grants": []string{"subscribe"}}, 404)) // owner only

	// WHEP and WHIP.
	var cur apiv1.Session
	c.do(call{method: "GET", path: "/v1/sessions/" + s.ID, key: sk, want: 200}).JSON(t, &cur)
	whep := "/v1/sessions/" + s.ID + "/whep"
	view := c.do(call{method: "POST", path: whep, key: cur.ViewerToken, body: []byte(offer(t, false)), headers: sdpCT, want: 201})
	c.do(call{method: "OPTIONS", path: whep, want: 204})
	c.do(call{method: "POST", path: whep, body: []byte(offer(t, false)), headers: sdpCT, want: 401, request: invalid})
	c.do(call{method: "POST", path: whep, key: "not.a.token", body: []byte(offer(t, false)), headers: sdpCT, want: 401})
	c.do(call{method: "POST", path: whep, key: cur.ViewerToken, body: []byte("v=0\r\n"), headers: sdpCT, want: 400})
	c.do(call{method: "POST", path: whep, key: cur.ViewerToken, body: []byte("{}"), headers: jsonCT, want: 415, request: invalid})
	c.do(call{method: "POST", path: "/v1/sessions/sess_missing/whep", key: cur.ViewerToken, body: []byte(offer(t, false)), headers: sdpCT, want: 403})
	loc := view.Header.Get("Location")
	c.do(call{method: "PATCH", path: loc, key: cur.ViewerToken, body: []byte("a=end-of-candidates\r\n"), headers: []string{"Content-Type", "application/trickle-ice-sdpfrag"}, want: 405, request: invalid})
	c.do(call{method: "DELETE", path: loc, key: cur.ViewerToken, want: 200})
	whip := "/v1/sessions/" + s.ID + "/whip"
	c.do(call{method: "POST", path: whip, key: cur.ViewerToken, body: []byte(offer(t, true)), headers: sdpCT, want: 403})
	pubRes := c.do(call{method: "POST", path: whip, key: pub.Token, body: []byte(offer(t, true)), headers: sdpCT, want: 201})
	c.do(call{method: "OPTIONS", path: whip, want: 204})
	c.do(call{method: "PATCH", path: pubRes.Header.Get("Location"), key: pub.Token, want: 405})
	c.do(call{method: "DELETE", path: pubRes.Header.Get("Location"), key: pub.Token, want: 200})

	// One session's events, with the token in the query as EventSource sends it.
	sessEvents := "/v1/sessions/" + s.ID + "/events"
	own := c.stream(call{method: "GET", path: sessEvents + "?access_token=" + url.QueryEscape(cur.ViewerToken)})
	c.do(call{method: "GET", path: sessEvents, want: 401, request: invalid})
	c.do(call{method: "GET", path: sessEvents, key: cur.ViewerToken, headers: []string{"Last-Event-ID", "soon"}, want: 400, request: invalid})
	c.do(call{method: "GET", path: "/v1/events", key: sk, headers: []string{"Last-Event-ID", "-1"}, want: 400, request: invalid})

	// Catalogue: avatars, their previews (with revalidation), voices.
	c.do(call{method: "GET", path: "/v1/avatars", key: sk, want: 200})
	c.do(call{method: "GET", path: "/v1/avatars", want: 401, request: invalid})
	c.do(call{method: "GET", path: "/v1/voices", key: ak, want: 200})
	c.do(call{method: "GET", path: "/v1/voices", key: "not-a-key-0123456789", want: 401})
	pv := c.do(call{method: "GET", path: "/v1/avatars/default/preview", key: sk, want: 200})
	c.do(call{method: "GET", path: "/v1/avatars/default/preview", key: sk, headers: []string{"If-None-Match", pv.Header.Get("ETag")}, want: 304})
	c.do(call{method: "GET", path: "/v1/avatars/nobody/preview", key: sk, want: 404})
	c.do(call{method: "GET", path: "/v1/avatars/bad%21name/preview", key: sk, want: 404, request: invalid})

	// Workers: list, read, drain (then no capacity), undrain.
	c.do(call{method: "GET", path: "/v1/workers", key: ak, want: 200})
	c.do(call{method: "GET", path: "/v1/workers", key: sk, want: 403})
	c.do(call{method: "GET", path: "/v1/workers/w0", key: ak, want: 200})
	c.do(call{method: "GET", path: "/v1/workers/w9", key: ak, want: 404})
	c.do(jsonCall("POST", "/v1/workers/w0/drain", ak, map[string]any{"migrate": false}, 202))
	c.do(call{method: "POST", path: "/v1/workers/w0/drain", key: ak, want: 202})
	c.do(withReq(jsonCall("POST", "/v1/workers/w0/drain", ak, map[string]any{"migrate": "yes"}, 400), invalid))
	c.do(call{method: "POST", path: "/v1/workers/w9/drain", key: ak, want: 404})
	events.next("worker.draining", 20*time.Second)
	noCap := jsonCall("POST", "/v1/sessions", sk, map[string]any{}, 503)
	noCap.code = apiv1.CodeNoCapacity
	r = c.do(noCap)
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 no_capacity without Retry-After")
	}
	c.do(call{method: "POST", path: "/v1/workers/w0/undrain", key: ak, want: 200})
	c.do(call{method: "POST", path: "/v1/workers/w9/undrain", key: ak, want: 404})
	events.next("worker.undrained", 20*time.Second)

	// Quotas of a key with 1 live session and 4 requests of burst.
	f.Eventually(20*time.Second, "the worker takes sessions again", func() bool {
		return f.MustDo(0, "GET", "/v1/workers/w0", ak, nil).Status == 200 && workerState(t, f) == apiv1.WorkerActive
	})
	c.do(jsonCall("POST", "/v1/sessions", testfleet.OtherKey, map[string]any{}, 201))
	over := jsonCall("POST", "/v1/sessions", testfleet.OtherKey, map[string]any{}, 429)
	over.code = apiv1.CodeQuotaExceeded
	c.do(over)
	c.do(call{method: "GET", path: "/v1/sessions/" + s.ID, key: testfleet.OtherKey, want: 404}) // another key's
	c.do(call{method: "GET", path: "/v1/sessions", key: testfleet.OtherKey, want: 200})
	c.do(call{method: "GET", path: "/v1/sessions", key: testfleet.OtherKey, want: 429, code: apiv1.CodeRateLimited})

	// End the session: its stream says so; speaking to it is refused.
	c.do(call{method: "DELETE", path: "/v1/sessions/" + s.ID, key: sk, want: 204})
	c.do(call{method: "DELETE", path: "/v1/sessions/" + s.ID, key: sk, want: 204})
	c.do(call{method: "DELETE", path: "/v1/sessions/sess_missing", key: sk, want: 404})
	ended := own.next("session.ended", 20*time.Second)
	if ended["session_id"] != s.ID {
		t.Fatalf("session.ended of %v on the stream of %s", ended["session_id"], s.ID)
	}
	c.do(jsonCall("POST", speak, sk, map[string]any{"text": "Too late."}, 409))
	c.do(call{method: "POST", path: "/v1/sessions/" + s.ID + "/interrupt", key: sk, want: 409})
	c.do(call{method: "POST", path: whep, key: cur.ViewerToken, body: []byte(offer(t, false)), headers: sdpCT, want: 404})
	c.do(jsonCall("POST", tokens, sk, map[string]any{"grants": []string{"subscribe"}}, 404))

	c.coverage()
}

// preview serves a small JPEG as the preview of "default".
func preview(t *testing.T) server.Previews {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 16, 16))
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return func(name string) (server.Preview, bool) {
		if name != "default" {
			return server.Preview{}, false
		}
		return server.Preview{Image: b.Bytes(), ContentType: "image/jpeg", Width: 16, Height: 16}, true
	}
}

func withReq(c call, v validity) call {
	c.request = v
	return c
}

// workerState reads w0's state.
func workerState(t *testing.T, f *testfleet.Fleet) string {
	t.Helper()
	var w apiv1.Worker
	f.MustDo(0, "GET", "/v1/workers/w0", testfleet.AdminKey, nil).JSON(t, &w)
	return w.State
}
