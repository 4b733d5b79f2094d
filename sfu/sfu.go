package sfu

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/webrtc/v4"
)

// Sentinel errors. Every error the package returns for these conditions
// wraps one of them (test with errors.Is).
var (
	// ErrInvalidSDP: the offer does not parse, or offers nothing usable.
	ErrInvalidSDP = errors.New("invalid SDP offer")
	// ErrRoomFull: the room has its maximum of viewers (or publishers).
	ErrRoomFull = errors.New("room is full")
	// ErrClosed: the SFU or the room is closed.
	ErrClosed = errors.New("closed")
	// ErrRoomExists: OpenRoom was given the id of an open room.
	ErrRoomExists = errors.New("room already open")
	// ErrTooManyPending: the room (or the viewer's token) has its maximum
	// of viewers that have an answer but are not connected yet. Unlike
	// ErrRoomFull it clears on its own within ConnectTimeout.
	ErrTooManyPending = errors.New("too many viewers connecting")
)

// Defaults for the zero values of Config.
const (
	DefaultListenIP               = "0.0.0.0"
	DefaultMaxViewersPerRoom      = 50
	DefaultMaxPublishersPerRoom   = 2
	DefaultKeyframeInterval       = 500 * time.Millisecond
	DefaultICEDisconnectedTimeout = 5 * time.Second
	DefaultICEFailedTimeout       = 10 * time.Second
	DefaultConnectTimeout         = 10 * time.Second
	DefaultMaxPendingViewers      = 10
	DefaultMaxPendingPerToken     = 5
	// udpSocketBuffer is the kernel buffer asked for the media socket, both
	// ways: every viewer's packets leave through it.
	udpSocketBuffer = 4 << 20
)

// Config configures an SFU. The zero value is usable but binds an ephemeral
// port on every interface; set MediaPort in production.
type Config struct {
	// MediaPort is the one UDP port that carries the media of every peer of
	// every room (ICE UDP mux); 0 picks an ephemeral port (tests).
	MediaPort int
	// ListenIP is the address the media socket binds (default 0.0.0.0).
	ListenIP string
	// PublicIP, when set, replaces the host candidates' address in answers
	// (a server behind 1:1 NAT).
	PublicIP string
	// ICEServers are STUN/TURN servers for clients; the SFU itself gathers
	// host candidates on MediaPort only, so it never uses them.
	ICEServers []webrtc.ICEServer
	// ICELite makes the SFU an ICE-lite agent (RFC 8445 §2.5): right for a
	// server with a public address; full ICE (default) works everywhere.
	ICELite bool
	// MaxViewersPerRoom caps a room's viewers (default 50; AddViewer beyond
	// it fails with ErrRoomFull). 50 viewers of a 2 Mbit/s stream is 100
	// Mbit/s out of one worker per session.
	MaxViewersPerRoom int
	// MaxPublishersPerRoom caps a room's WHIP publishers (default 2).
	MaxPublishersPerRoom int
	// KeyframeInterval is the least time between two keyframe requests a
	// room forwards (default 500 ms). The first request passes at once; a
	// request that falls inside the interval is held and sent when it ends.
	KeyframeInterval time.Duration
	// ICEDisconnectedTimeout and ICEFailedTimeout override the ICE
	// consent timeouts (default 5 s and 10 s): a viewer that stops answering
	// is removed after about their sum.
	ICEDisconnectedTimeout, ICEFailedTimeout time.Duration
	// ConnectTimeout removes a peer whose connection (ICE and DTLS) has
	// not come up this long after its answer (default 10 s).
	ConnectTimeout time.Duration
	// MaxPendingViewers caps a room's pending viewers: those answered but
	// not connected yet (default 10); MaxPendingPerToken caps them per
	// viewer token (default 5). Beyond either, AddViewer fails with
	// ErrTooManyPending and takes no place, so offers that never connect
	// cannot fill a room. ViewerOptions may set other caps per call.
	MaxPendingViewers, MaxPendingPerToken int
	// DisableSendBatching sends every datagram with its own sendto, as
	// before batching. By default (Linux) a room's fan-out of one sample
	// to every viewer is queued and sent with sendmmsg, DefaultSendBatch
	// datagrams per call (batchconn.go); elsewhere sends are never batched.
	DisableSendBatching bool
	// DisableGSO keeps batching but without UDP generic segmentation
	// offload: by default, where the kernel has UDP_SEGMENT, each viewer's
	// packets of one frame leave as one GSO send inside the sendmmsg.
	DisableGSO bool
	// Logger receives the SFU's logs (default slog.Default()).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ListenIP == "" {
		c.ListenIP = DefaultListenIP
	}
	if c.MaxViewersPerRoom <= 0 {
		c.MaxViewersPerRoom = DefaultMaxViewersPerRoom
	}
	if c.MaxPublishersPerRoom <= 0 {
		c.MaxPublishersPerRoom = DefaultMaxPublishersPerRoom
	}
	if c.KeyframeInterval <= 0 {
		c.KeyframeInterval = DefaultKeyframeInterval
	}
	if c.ICEDisconnectedTimeout <= 0 {
		c.ICEDisconnectedTimeout = DefaultICEDisconnectedTimeout
	}
	if c.ICEFailedTimeout <= 0 {
		c.ICEFailedTimeout = DefaultICEFailedTimeout
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxPendingViewers <= 0 {
		c.MaxPendingViewers = DefaultMaxPendingViewers
	}
	if c.MaxPendingPerToken <= 0 {
		c.MaxPendingPerToken = DefaultMaxPendingPerToken
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// SFU is a selective forwarding unit: rooms of one publishing session each,
// fanned out to WHEP viewers, with WHIP publishers feeding audio back. All
// its peers share one UDP socket. Safe for concurrent use.
type SFU struct {
	cfg  Config
	log  *slog.Logger
	conn *net.UDPConn
	// batch wraps conn under the ICE mux when sends are batched (nil
	// otherwise; its begin/end are no-ops on nil).
	batch  *batchConn
	mux    interface{ Close() error }
	engine *webrtc.MediaEngine
	// settings is copied into every peer's API; it carries the ICE mux.
	settings webrtc.SettingEngine
	// Interceptor factories shared by every peer's registry (each
	// PeerConnection builds its own interceptors from them). The NACK
	// responder is built on the room's packet cache (nack.go).
	senderReports, receiverReports interceptor.Factory
	metrics                        *metricDescs
	// reports sends every viewer's sender reports (senderreport.go), on
	// a goroutine Close stops and waits for (wg).
	reports *reportClock
	wg      sync.WaitGroup

	mu    sync.Mutex
	rooms map[string]*Room
	// retired sums the counters of closed rooms (under mu).
	retired roomTotals
	closed  bool
}

// New binds the media socket and returns a running SFU.
func New(cfg Config) (*SFU, error) {
	cfg = cfg.withDefaults()
	ip := net.ParseIP(cfg.ListenIP)
	if ip == nil {
		return nil, fmt.Errorf("sfu: listen IP %q is not an IP address", cfg.ListenIP)
	}
	if cfg.PublicIP != "" && net.ParseIP(cfg.PublicIP) == nil {
		return nil, fmt.Errorf("sfu: public IP %q is not an IP address", cfg.PublicIP)
	}
	if cfg.MediaPort < 0 || cfg.MediaPort > 65535 {
		return nil, fmt.Errorf("sfu: media port %d out of range", cfg.MediaPort)
	}
	network, netType := "udp4", webrtc.NetworkTypeUDP4
	if ip.To4() == nil {
		network, netType = "udp6", webrtc.NetworkTypeUDP6
	}
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: ip, Port: cfg.MediaPort})
	if err != nil {
		return nil, fmt.Errorf("sfu: bind media port: %w", err)
	}
	// Best effort: the kernel may cap these (net.core.wmem_max).
	_ = conn.SetWriteBuffer(udpSocketBuffer)
	_ = conn.SetReadBuffer(udpSocketBuffer)

	engine, err := newMediaEngine()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s := &SFU{cfg: cfg, log: cfg.Logger, conn: conn, engine: engine, rooms: make(map[string]*Room), metrics: newMetricDescs()}
	var muxConn net.PacketConn = conn
	if !cfg.DisableSendBatching && batchingSupported() {
		s.batch = newBatchConn(conn, DefaultSendBatch, !cfg.DisableGSO, s.log)
		muxConn = s.batch
	}
	if err := s.newInterceptorFactories(); err != nil {
		_ = conn.Close()
		return nil, err
	}
	mux := webrtc.NewICEUDPMux(nil, muxConn)
	s.mux = mux
	s.settings.SetICEUDPMux(mux)
	s.settings.SetNetworkTypes([]webrtc.NetworkType{netType})
	s.settings.SetLite(cfg.ICELite)
	s.settings.SetIncludeLoopbackCandidate(ip.IsLoopback())
	// No mDNS: 0 here would mean Pion's default, query-only, which opens
	// an mDNS socket and reader per PeerConnection. A browser's .local
	// candidates are useless to a server; its checks reach our host
	// candidate and become peer-reflexive candidates.
	s.settings.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	keepalive := min(2*time.Second, cfg.ICEDisconnectedTimeout/2)
	s.settings.SetICETimeouts(cfg.ICEDisconnectedTimeout, cfg.ICEFailedTimeout, keepalive)
	if cfg.PublicIP != "" {
		err := s.settings.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        []string{cfg.PublicIP},
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		})
		if err != nil {
			_ = mux.Close()
			_ = conn.Close()
			return nil, fmt.Errorf("sfu: public IP rewrite rule: %w", err)
		}
	}
	s.wg.Add(1)
	go func() { // the last step of New: no failure leaves it running
		defer s.wg.Done()
		s.reports.run()
	}()
	s.log.Info("sfu: media socket bound", "addr", conn.LocalAddr().String(), "public_ip", cfg.PublicIP, "ice_lite", cfg.ICELite, "send_batching", s.batch != nil, "gso", s.batch != nil && s.batch.gso.Load())
	return s, nil
}

// newMediaEngine registers the two codecs the SFU forwards: VP8 and Opus,
// with the RTCP feedback viewers may use (NACK, PLI, FIR; no TWCC/REMB:
// the stream is encoded once for everyone, so there is no per-viewer rate).
func newMediaEngine() (*webrtc.MediaEngine, error) {
	m := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBNACK}, {Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"}, {Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"}}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb},
		PayloadType:        96,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("sfu: register VP8: %w", err)
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: opusCapability(),
		PayloadType:        111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("sfu: register Opus: %w", err)
	}
	return m, nil
}

func vp8Capability() webrtc.RTPCodecCapability {
	return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
}

func opusCapability() webrtc.RTPCodecCapability {
	return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
}

func (s *SFU) newInterceptorFactories() error {
	// Our own sender reports (senderreport.go): Pion's read the clock
	// and take a lock for every packet of every viewer, and tick on a
	// goroutine per viewer; ours tick for all viewers on one.
	receiverReports, err := report.NewReceiverInterceptor(report.ReceiverInterval(time.Second))
	if err != nil {
		return fmt.Errorf("sfu: receiver reports: %w", err)
	}
	s.reports = newReportClock(time.Second, s.batch) // New starts it last
	s.senderReports, s.receiverReports = senderReporterFactory{clock: s.reports}, receiverReports
	return nil
}

// newAPI returns a webrtc.API for one peer, with that peer's interceptors.
func (s *SFU) newAPI(factories ...interceptor.Factory) *webrtc.API {
	reg := &interceptor.Registry{}
	for _, f := range factories {
		reg.Add(f)
	}
	return webrtc.NewAPI(
		webrtc.WithMediaEngine(s.engine),
		webrtc.WithSettingEngine(s.settings),
		webrtc.WithInterceptorRegistry(reg),
	)
}

// LocalAddr is the bound UDP media address.
func (s *SFU) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// ICEServers are the STUN/TURN servers clients should use (a copy).
func (s *SFU) ICEServers() []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, len(s.cfg.ICEServers))
	for i, srv := range s.cfg.ICEServers {
		srv.URLs = append([]string(nil), srv.URLs...)
		out[i] = srv
	}
	return out
}

// OpenRoom opens the room of one session. It fails with ErrRoomExists if
// the id is taken and with ErrClosed after Close.
func (s *SFU) OpenRoom(id string, opts RoomOptions) (*Room, error) {
	if id == "" {
		return nil, errors.New("sfu: open room: empty id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("sfu: open room %s: %w", id, ErrClosed)
	}
	if _, ok := s.rooms[id]; ok {
		return nil, fmt.Errorf("sfu: open room %s: %w", id, ErrRoomExists)
	}
	r, err := newRoom(s, id, opts)
	if err != nil {
		return nil, err
	}
	s.rooms[id] = r
	return r, nil
}

// Room returns the open room with that id.
func (s *SFU) Room(id string) (*Room, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rooms[id]
	return r, ok
}

func (s *SFU) forget(r *Room) {
	t := r.totals() // the room is closed: its counters no longer move
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rooms[r.id] == r {
		delete(s.rooms, r.id)
		s.retired.add(t)
	}
}

func (s *SFU) openRooms() []*Room {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		out = append(out, r)
	}
	return out
}

// Close closes every room and its peers, then the media socket.
func (s *SFU) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	var errs []error
	for _, r := range s.openRooms() {
		errs = append(errs, r.Close())
	}
	s.reports.stop()
	s.wg.Wait()
	if err := s.mux.Close(); err != nil {
		errs = append(errs, fmt.Errorf("sfu: close ICE mux: %w", err))
	}
	// The mux closes the socket; a second close only reports that.
	if s.batch != nil {
		_ = s.batch.Close()
	}
	_ = s.conn.Close()
	return errors.Join(errs...)
}
