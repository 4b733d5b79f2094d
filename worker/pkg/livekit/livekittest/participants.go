package livekittest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"image"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/livekit"
	lkproto "github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/vpx"
	"github.com/pion/mediadevices/pkg/prop"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
)

// Call is one playback RPC the agent received.
type Call struct {
	Method      string
	From        string
	Position    float64
	Interrupted bool
	At          time.Time
}

// Agent plays a LiveKit Agents voice agent's side of the avatar contract:
// it is in the room, sends its speech as byte streams on lk.audio_stream,
// calls lk.clear_buffer and receives lk.playback_started/finished.
type Agent struct {
	room  *lksdk.Room
	calls chan Call
}

// JoinAgent joins room as identity, kind agent, with the playback RPCs
// registered; it leaves when the test ends.
func JoinAgent(t testing.TB, srv *Server, room, identity string) *Agent {
	t.Helper()
	a := &Agent{calls: make(chan Call, 64)}
	r, err := lksdk.ConnectToRoomWithToken(srv.URL,
		Token(t, room, identity, lkproto.ParticipantInfo_AGENT, nil), lksdk.NewRoomCallback(),
		lksdk.WithAutoSubscribe(false))
	if err != nil {
		t.Fatalf("agent joins: %v", err)
	}
	a.room = r
	t.Cleanup(a.Leave)
	record := func(method string) lksdk.RpcHandlerFunc {
		return func(d lksdk.RpcInvocationData) (string, error) {
			c := Call{Method: method, From: d.CallerIdentity, At: time.Now()}
			if method == livekit.RPCPlaybackFinished {
				var p struct {
					PlaybackPosition *float64 `json:"playback_position"`
					Interrupted      *bool    `json:"interrupted"`
				}
				if err := json.Unmarshal([]byte(d.Payload), &p); err != nil || p.PlaybackPosition == nil || p.Interrupted == nil {
					t.Errorf("playback_finished payload %q: %v", d.Payload, err)
					return "", errors.New("bad payload")
				}
				c.Position, c.Interrupted = *p.PlaybackPosition, *p.Interrupted
			}
			a.calls <- c
			return "ok", nil
		}
	}
	for _, m := range []string{livekit.RPCPlaybackStarted, livekit.RPCPlaybackFinished} {
		if err := r.RegisterRpcMethod(m, record(m)); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// Leave leaves the room.
func (a *Agent) Leave() {
	if a.room != nil {
		a.room.Disconnect()
		a.room = nil
	}
}

// Send streams one speech segment (s16le at rate, channels) to the avatar
// in 100 ms pieces, as fast as the data channel takes them; close ends the
// segment (end false leaves the stream open, returned).
func (a *Agent) Send(t testing.TB, to string, pcm []byte, rate, channels int, end bool) *lksdk.ByteStreamWriter {
	t.Helper()
	w := a.room.LocalParticipant.StreamBytes(lksdk.StreamBytesOptions{
		Topic: livekit.AudioTopic, MimeType: "audio/pcm", DestinationIdentities: []string{to},
		Attributes: map[string]string{livekit.AttrSampleRate: itoa(rate), livekit.AttrNumChannels: itoa(channels)},
	})
	piece := rate / 10 * 2 * channels
	done := make(chan struct{})
	for len(pcm) > 0 {
		n := min(len(pcm), piece)
		var onDone *func()
		if n == len(pcm) {
			f := func() { close(done) }
			onDone = &f
		}
		w.Write(bytes.Clone(pcm[:n]), onDone)
		pcm = pcm[n:]
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the segment's bytes were not sent in 30 s")
	}
	if end {
		w.Close()
	}
	return w
}

// Clear calls lk.clear_buffer on the avatar.
func (a *Agent) Clear(t testing.TB, to string) {
	t.Helper()
	timeout := 5 * time.Second
	res, err := a.room.LocalParticipant.PerformRpc(lksdk.PerformRpcParams{DestinationIdentity: to, Method: livekit.RPCClearBuffer, ResponseTimeout: &timeout})
	if err != nil || res == nil || *res != "ok" {
		t.Fatalf("lk.clear_buffer: %v %v", res, err)
	}
}

// Next waits for the next playback RPC.
func (a *Agent) Next(t testing.TB, within time.Duration) Call {
	t.Helper()
	select {
	case c := <-a.calls:
		return c
	case <-time.After(within):
		t.Fatalf("no playback RPC within %s", within)
	}
	return Call{}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// Speech is espeak-ng's reading of text as a WAV at its own rate (22050
// Hz), turned into stereo s16le (both channels the same), as an agent's
// TTS would hand it over.
func Speech(t testing.TB, text string) (pcm []byte, rate int, d time.Duration) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "speech.wav")
	if out, err := exec.Command("espeak-ng", "-w", path, text).CombinedOutput(); err != nil {
		t.Fatalf("espeak-ng: %v: %s (run scripts/setup.sh first)", err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := wav.NewDecoder(f)
	if err != nil {
		t.Fatal(err)
	}
	h := dec.Header()
	buf := make([]float32, 4096)
	for {
		n, err := dec.Read(buf)
		for _, v := range buf[:n] {
			s := int16(max(-32768, min(32767, v*32767)))
			pcm = binary.LittleEndian.AppendUint16(pcm, uint16(s))
			pcm = binary.LittleEndian.AppendUint16(pcm, uint16(s))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return pcm, h.SampleRate, time.Duration(len(pcm)/4) * time.Second / time.Duration(h.SampleRate)
}

// Frame is one decoded video frame of the avatar and when it arrived.
type Frame struct {
	At  time.Time
	Img *image.YCbCr
}

// Subscriber is a room participant that decodes the avatar's VP8 video.
type Subscriber struct {
	room   *lksdk.Room
	mu     sync.Mutex
	frames []Frame
	audio  int
	wg     sync.WaitGroup
}

// JoinSubscriber joins room as a standard participant that decodes the
// video of the participant named avatar; it leaves when the test ends.
func JoinSubscriber(t testing.TB, srv *Server, room, avatar string) *Subscriber {
	t.Helper()
	s := &Subscriber{}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if rp.Identity() != avatar {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				s.readVideo(t, tr)
				return
			}
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				s.mu.Lock()
				s.audio++
				s.mu.Unlock()
			}
		}()
	}
	r, err := lksdk.ConnectToRoomWithToken(srv.URL, Token(t, room, "viewer", lkproto.ParticipantInfo_STANDARD, nil), cb)
	if err != nil {
		t.Fatalf("subscriber joins: %v", err)
	}
	s.room = r
	t.Cleanup(func() {
		r.Disconnect()
		s.wg.Wait()
	})
	return s
}

// readVideo rebuilds VP8 frames from the track's RTP and decodes them.
func (s *Subscriber) readVideo(t testing.TB, tr *webrtc.TrackRemote) {
	sb := samplebuilder.New(64, &codecs.VP8Packet{}, 90000)
	src := &oneFrame{}
	var dec codec.VideoDecoder
	defer func() {
		if dec != nil {
			_ = dec.Close()
		}
	}()
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		sb.Push(pkt)
		for smp := sb.Pop(); smp != nil; smp = sb.Pop() {
			b := smp.Data
			if dec == nil {
				if len(b) < 10 || b[0]&1 != 0 {
					continue // wait for a keyframe
				}
				w, h := int(binary.LittleEndian.Uint16(b[6:8])&0x3fff), int(binary.LittleEndian.Uint16(b[8:10])&0x3fff)
				if dec, err = vpx.NewDecoder(src, prop.Media{Video: prop.Video{Width: w, Height: h}}); err != nil {
					t.Errorf("VP8 decoder: %v", err)
					return
				}
			}
			src.b = b
			img, release, err := dec.Read()
			if err != nil {
				continue
			}
			y, ok := img.(*image.YCbCr)
			if ok {
				c := *y
				c.Y, c.Cb, c.Cr = bytes.Clone(y.Y), bytes.Clone(y.Cb), bytes.Clone(y.Cr)
				s.mu.Lock()
				s.frames = append(s.frames, Frame{At: time.Now(), Img: &c})
				s.mu.Unlock()
			}
			release()
		}
	}
}

// Since returns the frames that arrived after t0.
func (s *Subscriber) Since(t0 time.Time) []Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Frame
	for _, f := range s.frames {
		if f.At.After(t0) {
			out = append(out, f)
		}
	}
	return out
}

// Count is how many video frames were decoded and audio packets read.
func (s *Subscriber) Count() (video, audio int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.frames), s.audio
}

// oneFrame hands the decoder the frame it was given.
type oneFrame struct{ b []byte }

func (r *oneFrame) Read(p []byte) (int, error) {
	if r.b == nil {
		return 0, io.EOF
	}
	if len(r.b) > len(p) {
		return 0, io.ErrShortBuffer
	}
	n := copy(p, r.b)
	r.b = nil
	return n, nil
}

// Room is the agent's room connection.
func (a *Agent) Room() *lksdk.Room { return a.room }
