package whepviewer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Frame is one decoded video frame.
type Frame struct {
	// Index counts the whole frames received, from 0.
	Index int
	// Image is the decoded picture (the viewer's own copy).
	Image        *image.YCbCr
	RTPTimestamp uint32
	Keyframe     bool
	// Received is when the frame's last packet arrived; Decoded when its
	// picture was ready.
	Received, Decoded time.Time
}

// Options configures a viewer.
type Options struct {
	// DecodeAll decodes every frame; otherwise only the first key frame is
	// decoded and later frames are only counted.
	DecodeAll bool
	// OnFrame, when set, is called (on the video goroutine) with each
	// decoded frame.
	OnFrame func(Frame)
	// OnAudio, when set, is called (on the audio goroutine) with each
	// Opus RTP packet and when it arrived.
	OnAudio func(pkt *rtp.Packet, received time.Time)
	// OnSenderReport, when set, is called (on a goroutine per track) with
	// each RTCP sender report of a track, its kind and when it arrived:
	// what a browser maps RTP timestamps to the sender's clock with.
	OnSenderReport func(kind webrtc.RTPCodecType, sr *rtcp.SenderReport, received time.Time)
	// Client sends the WHEP requests (default http.DefaultClient).
	Client *http.Client
	// ICEFailedTimeout, when > 0, is how long ICE may go without an
	// answer before the connection fails (Pion's default is 25 s); the
	// connection counts as disconnected after half of it.
	ICEFailedTimeout time.Duration
}

// Timings are when each step of the connection happened.
type Timings struct {
	// Start is when Dial began; Offered when the offer (with every
	// candidate) was ready; Answered when the WHEP answer was applied.
	Start, Offered, Answered time.Time
	// Connected is when ICE and DTLS were up (zero until then).
	Connected time.Time
	// FirstFrame is when the first picture was decoded (zero until then).
	FirstFrame time.Time
}

// Viewer is one WHEP viewer.
type Viewer struct {
	opts     Options
	pc       *webrtc.PeerConnection
	location string
	token    string

	connected chan struct{}
	firstSeen chan struct{}
	// firstPacket closes with the first RTP packet of any track; down
	// closes when the connection fails or the remote closes it.
	firstPacket chan struct{}
	down        chan struct{}
	lastPacket  atomic.Int64 // unix nanoseconds of the latest RTP packet
	firstAt     atomic.Int64 // unix nanoseconds of the first RTP packet
	firstOnce   sync.Once
	downOnce    sync.Once

	videoFrames  atomic.Int64
	audioPackets atomic.Int64
	plis         atomic.Int64

	mu       sync.Mutex
	timings  Timings
	first    Frame
	trackErr error
	closed   bool
	wg       sync.WaitGroup
}

// newAPI is a Pion API on loopback (host candidates over UDP/IPv4, no
// mDNS) with the default codecs and interceptors (NACK, RTCP reports).
func newAPI(iceFailed time.Duration) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("register codecs: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, fmt.Errorf("register interceptors: %w", err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if iceFailed > 0 {
		se.SetICETimeouts(iceFailed/2, iceFailed, min(iceFailed/4, 2*time.Second))
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// Dial offers to receive one video and one audio track, POSTs the offer
// (non-trickle: every candidate in it) to whepURL with the viewer token,
// and applies the answer. It returns once the answer is applied; media
// arrives later (WaitFirstFrame). Close or HangUp ends the viewer.
func Dial(ctx context.Context, whepURL, token string, opts Options) (*Viewer, error) {
	v := &Viewer{opts: opts, token: token, connected: make(chan struct{}), firstSeen: make(chan struct{}),
		firstPacket: make(chan struct{}), down: make(chan struct{})}
	if v.opts.Client == nil {
		v.opts.Client = http.DefaultClient
	}
	v.timings.Start = time.Now()
	api, err := newAPI(opts.ICEFailedTimeout)
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	v.pc = pc
	ok := false
	defer func() {
		if !ok {
			_ = v.Close()
		}
	}()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return nil, fmt.Errorf("add %s transceiver: %w", kind, err)
		}
	}
	var connOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			v.downOnce.Do(func() { close(v.down) })
		}
		if s == webrtc.PeerConnectionStateConnected {
			connOnce.Do(func() {
				v.mu.Lock()
				v.timings.Connected = time.Now()
				v.mu.Unlock()
				close(v.connected)
			})
		}
	})
	pc.OnTrack(v.onTrack)

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, fmt.Errorf("create offer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, fmt.Errorf("set offer: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return nil, fmt.Errorf("gather candidates: %w", ctx.Err())
	}
	v.timings.Offered = time.Now()
	answer, location, err := v.post(ctx, whepURL, pc.LocalDescription().SDP)
	if err != nil {
		return nil, err
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return nil, fmt.Errorf("set answer: %w", err)
	}
	v.location = location
	v.mu.Lock()
	v.timings.Answered = time.Now()
	v.mu.Unlock()
	ok = true
	return v, nil
}

// post sends the WHEP offer; it wants 201 with an answer and a Location.
func (v *Viewer) post(ctx context.Context, whepURL, offer string) (answer, location string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, whepURL, strings.NewReader(offer))
	if err != nil {
		return "", "", fmt.Errorf("WHEP request: %w", err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+v.token)
	res, err := v.opts.Client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("WHEP POST: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", "", fmt.Errorf("WHEP POST: read answer: %w", err)
	}
	if res.StatusCode != http.StatusCreated {
		return "", "", fmt.Errorf("WHEP POST: %w", &StatusError{Status: res.StatusCode, Body: string(bytes.TrimSpace(body))})
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || res.Header.Get("Location") == "" {
		return "", "", fmt.Errorf("WHEP POST: bad Location %q", res.Header.Get("Location"))
	}
	return string(body), res.Request.URL.ResolveReference(loc).String(), nil
}

// onTrack reads one remote track until the connection closes.
func (v *Viewer) onTrack(track *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.wg.Add(1)
	if v.opts.OnSenderReport != nil {
		v.wg.Add(1)
		go v.readReports(track.Kind(), recv)
	}
	v.mu.Unlock()
	defer v.wg.Done()
	if track.Kind() == webrtc.RTPCodecTypeAudio {
		for {
			pkt, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			v.packetSeen()
			v.audioPackets.Add(1)
			if v.opts.OnAudio != nil {
				v.opts.OnAudio(pkt, time.Now())
			}
		}
	}
	if !strings.EqualFold(track.Codec().MimeType, webrtc.MimeTypeVP8) {
		v.fail(fmt.Errorf("video codec %s, want VP8", track.Codec().MimeType))
		return
	}
	v.readVideo(track)
}

// readReports hands the track's sender reports to OnSenderReport until
// the connection closes.
func (v *Viewer) readReports(kind webrtc.RTPCodecType, recv *webrtc.RTPReceiver) {
	defer v.wg.Done()
	for {
		pkts, _, err := recv.ReadRTCP()
		if err != nil {
			return
		}
		at := time.Now()
		for _, p := range pkts {
			if sr, ok := p.(*rtcp.SenderReport); ok {
				v.opts.OnSenderReport(kind, sr, at)
			}
		}
	}
}

func (v *Viewer) readVideo(track *webrtc.TrackRemote) {
	var (
		asm     assembler
		dec     decoder
		decoded bool
		lastPLI time.Time
	)
	defer dec.close()
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			return
		}
		v.packetSeen()
		data, ts, ok := asm.push(pkt)
		if !ok {
			continue
		}
		received := time.Now()
		index := int(v.videoFrames.Add(1) - 1)
		key := isKeyframe(data)
		if !decoded && !key {
			// Joined between key frames: ask for one, at most every 500 ms.
			if time.Since(lastPLI) > 500*time.Millisecond {
				lastPLI = time.Now()
				v.plis.Add(1)
				_ = v.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(track.SSRC())}})
			}
			continue
		}
		if decoded && !v.opts.DecodeAll {
			continue
		}
		img, err := dec.decode(data)
		if err != nil {
			v.fail(fmt.Errorf("frame %d: %w", index, err))
			return
		}
		if img == nil {
			continue
		}
		f := Frame{Index: index, Image: img, RTPTimestamp: ts, Keyframe: key, Received: received, Decoded: time.Now()}
		if !decoded {
			decoded = true
			v.mu.Lock()
			v.first, v.timings.FirstFrame = f, f.Decoded
			v.mu.Unlock()
			close(v.firstSeen)
		}
		if v.opts.OnFrame != nil {
			v.opts.OnFrame(f)
		}
	}
}

// packetSeen notes the arrival of an RTP packet.
func (v *Viewer) packetSeen() {
	now := time.Now().UnixNano()
	v.lastPacket.Store(now)
	v.firstOnce.Do(func() {
		v.firstAt.Store(now)
		close(v.firstPacket)
	})
}

// FirstPacketAt is when the first RTP packet arrived (zero before it).
func (v *Viewer) FirstPacketAt() time.Time {
	if n := v.firstAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// LastPacket is when the latest RTP packet arrived (zero before the first).
func (v *Viewer) LastPacket() time.Time {
	if n := v.lastPacket.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// FirstPacket closes when the first RTP packet of any track arrives.
func (v *Viewer) FirstPacket() <-chan struct{} { return v.firstPacket }

// Down closes when the connection has failed or the remote closed it.
func (v *Viewer) Down() <-chan struct{} { return v.down }

func (v *Viewer) fail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.trackErr == nil {
		v.trackErr = err
	}
}

// Err is the first error met reading the media (nil if none).
func (v *Viewer) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.trackErr
}

// WaitConnected waits until ICE and DTLS are up.
func (v *Viewer) WaitConnected(ctx context.Context) error {
	select {
	case <-v.connected:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the connection (state %s): %w", v.pc.ConnectionState(), ctx.Err())
	}
}

// WaitFirstFrame waits for the first decoded picture and returns it.
func (v *Viewer) WaitFirstFrame(ctx context.Context) (Frame, error) {
	select {
	case <-v.firstSeen:
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.first, nil
	case <-ctx.Done():
		if err := v.Err(); err != nil {
			return Frame{}, err
		}
		return Frame{}, fmt.Errorf("wait for the first frame (state %s, %d frames, %d PLIs): %w",
			v.pc.ConnectionState(), v.videoFrames.Load(), v.plis.Load(), ctx.Err())
	}
}

// VideoFrames is the number of whole VP8 frames received.
func (v *Viewer) VideoFrames() int64 { return v.videoFrames.Load() }

// AudioPackets is the number of Opus packets received.
func (v *Viewer) AudioPackets() int64 { return v.audioPackets.Load() }

// PLIs is the number of picture loss indications the viewer sent.
func (v *Viewer) PLIs() int64 { return v.plis.Load() }

// Timings are the connection's steps so far.
func (v *Viewer) Timings() Timings {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.timings
}

// Location is the absolute URL of the WHEP viewer resource.
func (v *Viewer) Location() string { return v.location }

// HangUp DELETEs the viewer resource (with the viewer token), then closes
// the connection. The DELETE's error, if any, is returned after Close.
func (v *Viewer) HangUp(ctx context.Context) error {
	var err error
	req, rerr := http.NewRequestWithContext(ctx, http.MethodDelete, v.location, nil)
	if rerr != nil {
		err = fmt.Errorf("WHEP DELETE: %w", rerr)
	} else {
		req.Header.Set("Authorization", "Bearer "+v.token)
		res, derr := v.opts.Client.Do(req)
		switch {
		case derr != nil:
			err = fmt.Errorf("WHEP DELETE: %w", derr)
		default:
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusNoContent {
				err = fmt.Errorf("WHEP DELETE %s: %s", v.location, res.Status)
			}
		}
	}
	return errors.Join(err, v.Close())
}

// Close closes the peer connection and waits for the track readers.
func (v *Viewer) Close() error {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	err := v.pc.Close()
	v.wg.Wait()
	if err != nil {
		return fmt.Errorf("close peer connection: %w", err)
	}
	return nil
}
