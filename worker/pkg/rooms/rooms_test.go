package rooms

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/sfu"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

func newRooms(t *testing.T, cfg sfu.Config) *Rooms {
	t.Helper()
	cfg.ListenIP = "127.0.0.1"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := sfu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close SFU: %v", err)
		}
	})
	return New(s)
}

// viewer is a real Pion peer that offers to receive VP8 and Opus and counts
// the RTP packets of each kind.
type viewer struct {
	pc           *webrtc.PeerConnection
	video, audio atomic.Int64
}

func newViewer(t *testing.T) (*viewer, string) {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	v := &viewer{pc: pc}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		n := &v.audio
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			n = &v.video
		}
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			n.Add(1)
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return v, pc.LocalDescription().SDP
}

func (v *viewer) answer(t *testing.T, sdp string) {
	t.Helper()
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		t.Fatal(err)
	}
}

// vp8Key is the start of a VP8 keyframe (key bit clear, start code, size),
// enough for the SFU, which does not decode.
var vp8Key = []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x10, 0x00, 0x10, 0x00, 0, 0, 0, 0}

// TestSessionRoomCarriesMedia: a session's room opened through NewMedia
// carries the pipeline's samples to a viewer added through the Signaling
// side; the hooks are wired to the room's callbacks and the stats are
// converted.
func TestSessionRoomCarriesMedia(t *testing.T) {
	r := newRooms(t, sfu.Config{})
	var keyframes, viewers atomic.Int64
	media, err := r.NewMedia(&fleetv1.Session{Id: "s1"}, mediaruntime.MediaHooks{
		RequestKeyframe: func() { keyframes.Add(1) },
		PushPCM:         func([]float32) {},
		ViewersChanged:  func(n int) { viewers.Store(int64(n)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewMedia(&fleetv1.Session{Id: "s1"}, mediaruntime.MediaHooks{}); !errors.Is(err, sfu.ErrRoomExists) {
		t.Errorf("second room for s1: %v, want ErrRoomExists", err)
	}
	v, offer := newViewer(t)
	id, answer, err := r.AddViewer(t.Context(), "s1", offer, server.ViewerLimits{})
	if err != nil {
		t.Fatal(err)
	}
	v.answer(t, answer)

	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; v.video.Load() < 10 || v.audio.Load() < 10; i++ {
		select {
		case <-ctx.Done():
			t.Fatalf("viewer got %d video and %d audio packets", v.video.Load(), v.audio.Load())
		case <-tick.C:
		}
		if i%2 == 0 {
			if err := media.WriteVideo(pipeline.Sample{Data: vp8Key, Duration: 40 * time.Millisecond, Keyframe: true}); err != nil {
				t.Fatal(err)
			}
		}
		if err := media.WriteAudio(pipeline.Sample{Data: []byte{0xf8, 0xff, 0xfe}, Duration: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	if viewers.Load() != 1 || keyframes.Load() == 0 {
		t.Errorf("hooks: viewers %d, keyframe requests %d; want 1 viewer and a keyframe request for it", viewers.Load(), keyframes.Load())
	}
	st, err := r.Stats("s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetViewers()) != 1 || st.GetViewers()[0].GetId() != id || st.GetViewers()[0].GetPacketsSent() == 0 || st.GetVideoFramesSent() == 0 || st.GetAudioPacketsSent() == 0 {
		t.Errorf("stats %v", st)
	}
	if err := r.RemoveViewer(t.Context(), "s1", id); err != nil {
		t.Fatal(err)
	}
	if err := media.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Stats("s1"); !errors.Is(err, server.ErrNoRoom) {
		t.Errorf("stats after close: %v, want ErrNoRoom", err)
	}
	// Hanging up on a session that has ended is not an error.
	if err := r.RemoveViewer(t.Context(), "s1", id); err != nil {
		t.Errorf("remove viewer of an ended session: %v", err)
	}
}

// TestSignalingErrors: the SFU's errors reach the gRPC service as the
// sentinels it maps to status codes.
func TestSignalingErrors(t *testing.T) {
	r := newRooms(t, sfu.Config{MaxViewersPerRoom: 1, ICEServers: []webrtc.ICEServer{
		{URLs: []string{"stun:stun.example.net:3478"}},
		{URLs: []string{"turn:turn.example.net:3478"}, Username: "u", Credential: "p"},
	}})
	media, err := r.NewMedia(&fleetv1.Session{Id: "s1"}, mediaruntime.MediaHooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer media.Close()

	_, offer := newViewer(t)
	if _, _, err := r.AddViewer(t.Context(), "nope", offer, server.ViewerLimits{}); !errors.Is(err, server.ErrNoRoom) {
		t.Errorf("unknown session: %v, want ErrNoRoom", err)
	}
	if _, _, err := r.AddPublisher(t.Context(), "nope", offer); !errors.Is(err, server.ErrNoRoom) {
		t.Errorf("unknown session publisher: %v, want ErrNoRoom", err)
	}
	if _, _, err := r.AddViewer(t.Context(), "s1", "v=0\r\nnot sdp", server.ViewerLimits{}); !errors.Is(err, server.ErrInvalidSDP) {
		t.Errorf("bad offer: %v, want ErrInvalidSDP", err)
	}
	if _, _, err := r.AddViewer(t.Context(), "s1", offer, server.ViewerLimits{}); err != nil {
		t.Fatal(err)
	}
	_, offer2 := newViewer(t)
	if _, _, err := r.AddViewer(t.Context(), "s1", offer2, server.ViewerLimits{}); !errors.Is(err, server.ErrRoomFull) {
		t.Errorf("second viewer over a cap of 1: %v, want ErrRoomFull", err)
	}
	if err := r.RemovePublisher(t.Context(), "nope", "p1"); err != nil {
		t.Errorf("remove publisher of unknown session: %v", err)
	}
	ice := r.ICEServers()
	if len(ice) != 2 || ice[0].GetUrls()[0] != "stun:stun.example.net:3478" || ice[1].GetUsername() != "u" || ice[1].GetCredential() != "p" {
		t.Errorf("ICE servers %v", ice)
	}
}
