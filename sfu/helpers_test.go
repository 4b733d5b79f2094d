package sfu

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv(receiversEnv)); err == nil {
		if err := runReceivers(n); err != nil {
			fmt.Fprintln(os.Stderr, "receivers:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// testLogger is quiet unless SFU_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("SFU_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newTestSFU starts an SFU on an ephemeral loopback port, closed at cleanup.
func newTestSFU(t testing.TB, cfg Config) *SFU {
	t.Helper()
	cfg.ListenIP = "127.0.0.1"
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close SFU: %v", err)
		}
	})
	return s
}

// cuttableConn is a client's UDP socket whose network can be cut: once cut,
// it silently drops everything both ways, like a laptop lid closing.
type cuttableConn struct {
	*net.UDPConn
	cut atomic.Bool
}

func (c *cuttableConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFrom(b)
		if err != nil || !c.cut.Load() {
			return n, addr, err
		}
	}
}

func (c *cuttableConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.cut.Load() {
		return len(b), nil
	}
	return c.UDPConn.WriteTo(b, addr)
}

// clientOptions shape a test client peer.
type clientOptions struct {
	video, audio bool
	noRead       bool // never read the tracks (a viewer that stops reading)
	cuttable     bool // network through a cuttableConn
	bare         bool // no interceptors (cheap receivers for the benchmark)
}

// client is a real Pion peer on loopback playing a browser.
type client struct {
	pc   *webrtc.PeerConnection
	conn *cuttableConn
	mux  ice.UDPMux
	wg   sync.WaitGroup

	mu        sync.Mutex
	kinds     map[webrtc.RTPCodecType]*streamLog
	tracks    map[webrtc.RTPCodecType]*webrtc.TrackRemote
	gotTracks chan struct{}
}

// streamLog records what a client receives on one track.
type streamLog struct {
	packets, bytes  int
	frames          int // distinct RTP timestamps
	lastSeq         uint16
	lastTS          uint32
	gaps, dups      int
	skipped         int // video packets before the first keyframe
	first           bool
	firstAt, lastAt time.Time
}

func newClientAPI(opts clientOptions) (*webrtc.API, *cuttableConn, ice.UDPMux, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, nil, nil, err
	}
	reg := &interceptor.Registry{}
	if !opts.bare {
		if err := webrtc.ConfigureNack(m, reg); err != nil {
			return nil, nil, nil, err
		}
		rr, err := report.NewReceiverInterceptor(report.ReceiverInterval(200 * time.Millisecond))
		if err != nil {
			return nil, nil, nil, err
		}
		reg.Add(rr)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// Let retransmissions of packets already received reach the reader
	// (TestStats NACKs packets that were not lost).
	se.DisableSRTPReplayProtection(true)
	var conn *cuttableConn
	var mux ice.UDPMux
	if opts.cuttable {
		udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, nil, nil, err
		}
		conn = &cuttableConn{UDPConn: udp}
		mux = webrtc.NewICEUDPMux(nil, conn)
		se.SetICEUDPMux(mux)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), conn, mux, nil
}

// newClient makes a peer with recvonly (viewer) or sendonly (publisher)
// transceivers and returns it with its complete offer.
func newClient(t testing.TB, opts clientOptions, send webrtc.TrackLocal) (*client, string) {
	t.Helper()
	api, conn, mux, err := newClientAPI(opts)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{pc: pc, conn: conn, mux: mux, kinds: map[webrtc.RTPCodecType]*streamLog{}, tracks: map[webrtc.RTPCodecType]*webrtc.TrackRemote{}, gotTracks: make(chan struct{}, 2)}
	t.Cleanup(c.close)
	recv := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}
	if opts.video {
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, recv); err != nil {
			t.Fatal(err)
		}
	}
	if opts.audio {
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, recv); err != nil {
			t.Fatal(err)
		}
	}
	if send != nil {
		snd, err := pc.AddTransceiverFromTrack(send, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			t.Fatal(err)
		}
		c.wg.Add(1)
		go func() { // the sender's RTCP, so its interceptors run
			defer c.wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := snd.Sender().Read(buf); err != nil {
					return
				}
			}
		}()
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		// Read the receiver's RTCP (the SFU's sender reports), as a
		// browser does: the receiver-report interceptor needs them.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			drainRTCP(recv)
		}()
		c.mu.Lock()
		c.tracks[tr.Kind()] = tr
		log := &streamLog{first: true}
		c.kinds[tr.Kind()] = log
		c.mu.Unlock()
		c.gotTracks <- struct{}{}
		if opts.noRead {
			return
		}
		c.read(tr, log)
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
	return c, pc.LocalDescription().SDP
}

// read logs a track's packets until the connection closes.
func (c *client) read(tr *webrtc.TrackRemote, log *streamLog) {
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		now := time.Now()
		c.mu.Lock()
		if log.first && tr.Kind() == webrtc.RTPCodecTypeVideo && !vp8KeyframeStart(pkt.Payload) {
			// Like a browser's decoder: wait for a keyframe, ask for one.
			log.skipped++
			if log.skipped == 1 {
				_ = c.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(tr.SSRC())}})
			}
			c.mu.Unlock()
			continue
		}
		switch {
		case log.first:
			log.first = false
			log.firstAt = now
			log.frames = 1
		case int16(pkt.SequenceNumber-log.lastSeq) <= 0:
			log.dups++ // a retransmission or reordering
			c.mu.Unlock()
			continue
		case pkt.SequenceNumber != log.lastSeq+1:
			log.gaps++
		}
		if pkt.Timestamp != log.lastTS && !log.first && log.packets > 0 {
			log.frames++
		}
		log.packets++
		log.bytes += n
		log.lastSeq, log.lastTS, log.lastAt = pkt.SequenceNumber, pkt.Timestamp, now
		c.mu.Unlock()
	}
}

// answer applies the SFU's answer.
func (c *client) answer(t testing.TB, sdp string) {
	t.Helper()
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		t.Fatal(err)
	}
}

// snapshot copies the log of one kind (zero if no track yet).
func (c *client) snapshot(kind webrtc.RTPCodecType) streamLog {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.kinds[kind]; l != nil {
		return *l
	}
	return streamLog{}
}

func (c *client) track(kind webrtc.RTPCodecType) *webrtc.TrackRemote {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tracks[kind]
}

func (c *client) close() {
	_ = c.pc.GracefulClose()
	c.wg.Wait()
	if c.mux != nil {
		_ = c.mux.Close()
	}
}

// addViewer connects a client viewer to room and waits until its
// connection is up.
func addViewer(t testing.TB, ctx context.Context, room *Room, opts clientOptions) (*client, string) {
	t.Helper()
	c, offer := newClient(t, opts, nil)
	id, answer, err := room.AddViewer(ctx, offer)
	if err != nil {
		t.Fatal(err)
	}
	c.answer(t, answer)
	return c, id
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// source drives a room like a session: 25 fps VP8 and 50 pps Opus from one
// goroutine, a keyframe every 2 s or when one is asked for.
type source struct {
	room     *Room
	frameLen int // bytes of a delta frame; keyframes are 3x
	keyReq   atomic.Bool
	frames   atomic.Int64
	audio    atomic.Int64
	keys     atomic.Int64
	slowest  atomic.Int64 // the longest WriteVideo, ns
	stop     chan struct{}
	done     chan struct{}
}

func startSource(room *Room, frameLen int) *source {
	s := &source{room: room, frameLen: frameLen, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

// vp8Frame is a synthetic VP8 frame: a real frame tag (keyframe bit, show
// frame, and for keyframes the start code and 512×512), then filler bytes.
func vp8Frame(n int, key bool, i int) []byte {
	f := make([]byte, n)
	for j := range f {
		f[j] = byte(i + j)
	}
	f[0], f[1], f[2] = 0x11, 0, 0 // P=1: interframe, show_frame
	if key {
		f[0] = 0x10
		copy(f[3:], []byte{0x9d, 0x01, 0x2a, 0x00, 0x02, 0x00, 0x02})
	}
	return f
}

func (s *source) run() {
	defer close(s.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	opus := make([]byte, 80)
	opus[0] = 0x78 // TOC: SILK/CELT hybrid, 20 ms
	for n := 0; ; n++ {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		_ = s.room.WriteAudio(Sample{Data: opus, Duration: 20 * time.Millisecond})
		s.audio.Add(1)
		if n%2 != 0 {
			continue
		}
		i := int(s.frames.Load())
		key := i%50 == 0 || s.keyReq.Swap(false)
		size := s.frameLen
		if key {
			size *= 3
			s.keys.Add(1)
		}
		start := time.Now()
		_ = s.room.WriteVideo(Sample{Data: vp8Frame(size, key, i), Duration: 40 * time.Millisecond, Keyframe: key})
		if d := int64(time.Since(start)); d > s.slowest.Load() {
			s.slowest.Store(d)
		}
		s.frames.Add(1)
	}
}

func (s *source) close() {
	close(s.stop)
	<-s.done
}
