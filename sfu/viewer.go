package sfu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// viewer is one WHEP PeerConnection receiving the room's tracks.
type viewer struct {
	id   string
	room *Room
	pc   *webrtc.PeerConnection
	// token identifies the credential that made the viewer ("" = none).
	token string

	connectedAt atomic.Int64 // unix nanoseconds; 0 until connected
	video       bool         // receives the video track
	timer       *time.Timer  // removes the viewer if it never connects
	closeOnce   sync.Once
	closeErr    error

	packets, bytes       atomic.Uint64
	nacks, nackedPackets atomic.Uint64
	plis, firs           atomic.Uint64
	rtt                  atomic.Int64 // nanoseconds
	rate                 rateMeter
}

// ViewerOptions qualify one AddViewer call.
type ViewerOptions struct {
	// TokenID names the credential the offer came with (a viewer token's
	// id or digest, never the token); pending viewers are capped per
	// TokenID. Empty: the per-token cap does not apply.
	TokenID string
	// MaxPending and MaxPendingPerToken, when > 0, replace the SFU's
	// MaxPendingViewers and MaxPendingPerToken for this call (the control
	// plane passes the session owner's limits).
	MaxPending, MaxPendingPerToken int
}

// AddViewer answers a WHEP offer with no token: AddViewerWith with zero
// options.
func (r *Room) AddViewer(ctx context.Context, offerSDP string) (viewerID, answerSDP string, err error) {
	return r.AddViewerWith(ctx, offerSDP, ViewerOptions{})
}

// AddViewerWith answers a WHEP offer (recvonly audio and/or video) with the
// room's VP8 and Opus tracks. The answer holds every ICE candidate (no
// trickle): it returns once gathering is complete, or fails with ctx.
// The viewer is pending until its connection comes up; one still pending
// after ConnectTimeout is dropped. Errors wrap ErrInvalidSDP, ErrRoomFull,
// ErrTooManyPending or ErrClosed where they apply.
func (r *Room) AddViewerWith(ctx context.Context, offerSDP string, opts ViewerOptions) (viewerID, answerSDP string, err error) {
	want, err := checkOffer(offerSDP, roleViewer)
	if err != nil {
		return "", "", fmt.Errorf("sfu: room %s: add viewer: %w", r.id, err)
	}
	maxPending, maxPerToken := r.sfu.cfg.MaxPendingViewers, r.sfu.cfg.MaxPendingPerToken
	if opts.MaxPending > 0 {
		maxPending = opts.MaxPending
	}
	if opts.MaxPendingPerToken > 0 {
		maxPerToken = opts.MaxPendingPerToken
	}
	v := &viewer{id: newPeerID(), room: r, token: opts.TokenID}
	v.rate.start(time.Now())
	r.mu.Lock()
	pending, pendingOfToken := r.pendingLocked(opts.TokenID)
	switch {
	case r.closed:
		r.mu.Unlock()
		return "", "", fmt.Errorf("sfu: room %s: add viewer: %w", r.id, ErrClosed)
	case len(r.viewers) >= r.sfu.cfg.MaxViewersPerRoom:
		r.mu.Unlock()
		return "", "", fmt.Errorf("sfu: room %s: add viewer: %d viewers: %w", r.id, r.sfu.cfg.MaxViewersPerRoom, ErrRoomFull)
	case pending >= maxPending:
		r.mu.Unlock()
		return "", "", fmt.Errorf("sfu: room %s: add viewer: %d viewers connecting: %w", r.id, pending, ErrTooManyPending)
	case opts.TokenID != "" && pendingOfToken >= maxPerToken:
		r.mu.Unlock()
		return "", "", fmt.Errorf("sfu: room %s: add viewer: %d viewers of one token connecting: %w", r.id, pendingOfToken, ErrTooManyPending)
	}
	v.video = want.video
	r.viewers[v.id] = v // holds the place while negotiating
	r.mu.Unlock()

	answer, err := v.negotiate(ctx, offerSDP, want)
	if err != nil {
		r.dropViewer(v)
		return "", "", fmt.Errorf("sfu: room %s: add viewer: %w", r.id, err)
	}
	r.viewersChanged()
	r.log.Info("sfu: viewer added", "viewer", v.id, "video", want.video, "audio", want.audio)
	return v.id, answer, nil
}

// pendingLocked counts the room's viewers not connected yet, all and those
// of token. The caller holds r.mu.
func (r *Room) pendingLocked(token string) (all, ofToken int) {
	for _, v := range r.viewers {
		if v.connectedAt.Load() != 0 {
			continue
		}
		all++
		if token != "" && v.token == token {
			ofToken++
		}
	}
	return all, ofToken
}

// negotiate builds the viewer's PeerConnection and answers the offer.
func (v *viewer) negotiate(ctx context.Context, offer string, want offerMedia) (string, error) {
	r := v.room
	s := r.sfu
	// Viewers only send: NACK responder (on the room's packet cache),
	// sender reports (A/V sync, RTT), and our counting/keyframe-gate
	// interceptor, outermost so the others see only what is sent.
	nacks := nackResponderFactory{room: r, rtt: func() time.Duration { return time.Duration(v.rtt.Load()) }}
	api := s.newAPI(nacks, s.senderReports, viewerInterceptorFactory{v: v})
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", fmt.Errorf("new peer connection: %w", err)
	}
	r.mu.Lock()
	v.pc = pc
	r.mu.Unlock()
	pc.OnConnectionStateChange(v.onState)
	var senders []*webrtc.RTPSender
	for _, t := range []struct {
		want  bool
		track webrtc.TrackLocal
	}{{want.video, r.video}, {want.audio, r.audio}} {
		if !t.want {
			continue
		}
		tr, err := pc.AddTransceiverFromTrack(t.track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return "", fmt.Errorf("add %s track: %w", t.track.Kind(), err)
		}
		senders = append(senders, tr.Sender())
	}
	answer, err := answerOffer(ctx, pc, offer)
	if err != nil {
		return "", err
	}
	// Start the viewer's goroutines only if the room still holds it.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.viewers[v.id] != v {
		return "", ErrClosed
	}
	for _, snd := range senders {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			v.readRTCP(snd)
		}()
	}
	v.timer = time.AfterFunc(s.cfg.ConnectTimeout, func() {
		if v.connectedAt.Load() == 0 {
			r.log.Info("sfu: viewer never connected", "viewer", v.id)
			r.removeViewerAsync(v)
		}
	})
	return answer, nil
}

// answerOffer applies a remote offer and returns the complete answer.
func answerOffer(ctx context.Context, pc *webrtc.PeerConnection, offer string) (answer string, err error) {
	defer func() {
		// Pion should refuse bad SDP with an error; make sure no
		// offer can take the worker down if it does not.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: rejected by the WebRTC stack: %v", ErrInvalidSDP, p)
		}
	}()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: rejected by the WebRTC stack: %v", ErrInvalidSDP, err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: cannot answer: %v", ErrInvalidSDP, err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("gather ICE candidates: %w", ctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}

// onState follows the PeerConnection: a viewer that connects asks for a
// keyframe; a failed or closed one leaves the room.
func (v *viewer) onState(st webrtc.PeerConnectionState) {
	r := v.room
	switch st {
	case webrtc.PeerConnectionStateConnected:
		if v.connectedAt.CompareAndSwap(0, time.Now().UnixNano()) && v.video {
			// SRTP is up: the next keyframe reaches this viewer.
			r.keyframes.request()
		}
		r.log.Debug("sfu: viewer connected", "viewer", v.id)
	case webrtc.PeerConnectionStateDisconnected:
		r.log.Debug("sfu: viewer disconnected", "viewer", v.id)
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		r.log.Info("sfu: viewer gone", "viewer", v.id, "state", st.String())
		r.removeViewerAsync(v)
	}
}

// readRTCP reads one sender's RTCP until the PeerConnection closes. Reading
// is what drives the interceptors (NACK responder, sender reports); the
// feedback itself is counted and PLI/FIR become keyframe requests.
func (v *viewer) readRTCP(snd *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	ssrc := uint32(snd.GetParameters().Encodings[0].SSRC)
	for {
		n, _, err := snd.Read(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		v.feedback(ssrc, pkts, time.Now())
	}
}

// feedback handles the RTCP about one of our streams (ssrc). Compound
// packets reach every sender they name, so each counts only its own.
func (v *viewer) feedback(ssrc uint32, pkts []rtcp.Packet, now time.Time) {
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.PictureLossIndication:
			if p.MediaSSRC == ssrc {
				v.plis.Add(1)
				v.room.keyframes.request()
			}
		case *rtcp.FullIntraRequest:
			for _, e := range p.FIR {
				if e.SSRC == ssrc {
					v.firs.Add(1)
					v.room.keyframes.request()
					break
				}
			}
		case *rtcp.TransportLayerNack:
			if p.MediaSSRC == ssrc {
				v.nacks.Add(1)
				for _, pair := range p.Nacks {
					v.nackedPackets.Add(uint64(len(pair.PacketList())))
				}
			}
		case *rtcp.ReceiverReport:
			v.reports(ssrc, p.Reports, now)
		case *rtcp.SenderReport:
			v.reports(ssrc, p.Reports, now)
		}
	}
}

func (v *viewer) reports(ssrc uint32, reports []rtcp.ReceptionReport, now time.Time) {
	for _, rr := range reports {
		if rr.SSRC != ssrc {
			continue
		}
		if rtt, ok := rttFromReport(now, rr.LastSenderReport, rr.Delay); ok {
			v.rtt.Store(int64(rtt))
		}
	}
}

// sent counts one RTP packet going to the viewer (writer goroutine).
func (v *viewer) sent(h *rtp.Header, payload []byte) {
	v.packets.Add(1)
	v.bytes.Add(uint64(h.MarshalSize() + len(payload)))
}

func (v *viewer) stats(now time.Time) ViewerStats {
	st := ViewerStats{
		ID:            v.id,
		PacketsSent:   v.packets.Load(),
		BytesSent:     v.bytes.Load(),
		NACKsReceived: v.nacks.Load(),
		NACKedPackets: v.nackedPackets.Load(),
		PLIsReceived:  v.plis.Load(),
		FIRsReceived:  v.firs.Load(),
		RTT:           time.Duration(v.rtt.Load()),
		State:         webrtc.PeerConnectionStateNew.String(),
	}
	if pc := v.peer(); pc != nil {
		st.State = pc.ConnectionState().String()
	}
	if ns := v.connectedAt.Load(); ns != 0 {
		st.ConnectedAt = time.Unix(0, ns)
	}
	st.BitrateBps = v.rate.rate(now, st.BytesSent)
	return st
}

// peer is the PeerConnection once negotiate made it (nil before).
func (v *viewer) peer() *webrtc.PeerConnection {
	v.room.mu.Lock()
	defer v.room.mu.Unlock()
	return v.pc
}

// RemoveViewer ends a viewer. An unknown id is not an error.
func (r *Room) RemoveViewer(id string) error {
	r.mu.Lock()
	v, ok := r.viewers[id]
	if ok {
		delete(r.viewers, id)
		r.departed.add(v)
	}
	r.mu.Unlock()
	if !ok {
		return nil
	}
	r.viewersChanged()
	r.log.Info("sfu: viewer removed", "viewer", id)
	return v.close()
}

// removeViewerAsync removes v from a Pion callback or timer: the closing
// runs on a room goroutine, never in the callback.
func (r *Room) removeViewerAsync(v *viewer) {
	r.goPeer(func() {
		if r.dropViewer(v) {
			r.viewersChanged()
		}
	})
}

// dropViewer forgets v and closes it; it reports whether v was in the room.
func (r *Room) dropViewer(v *viewer) bool {
	r.mu.Lock()
	cur, ok := r.viewers[v.id]
	if ok && cur == v {
		delete(r.viewers, v.id)
		r.departed.add(v)
	}
	r.mu.Unlock()
	if !ok || cur != v {
		return false // someone else removed it and closes it
	}
	_ = v.close()
	return true
}

// close ends the viewer's PeerConnection (once), waiting for Pion's own
// goroutines. Its RTCP readers then return.
func (v *viewer) close() error {
	v.closeOnce.Do(func() {
		v.room.mu.Lock()
		if v.timer != nil {
			v.timer.Stop()
		}
		pc := v.pc
		v.room.mu.Unlock()
		if pc != nil {
			if err := pc.GracefulClose(); err != nil && !errors.Is(err, webrtc.ErrConnectionClosed) {
				v.closeErr = fmt.Errorf("sfu: close viewer %s: %w", v.id, err)
			}
		}
	})
	return v.closeErr
}

// newPeerID returns a random id for a viewer or publisher (16 hex digits).
func newPeerID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Compile-time check that the viewer's interceptor is one.
var _ interceptor.Interceptor = (*viewerInterceptor)(nil)
