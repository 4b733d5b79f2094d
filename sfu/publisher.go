package sfu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/avatarfleet/avatarfleet/sfu/opusdec"
	"github.com/pion/webrtc/v4"
)

// pcmRate is the rate OnAudio receives: what the lip-sync model's mel
// features are computed at.
const pcmRate = 16000

// publisher is one WHIP PeerConnection sending microphone audio.
type publisher struct {
	id   string
	room *Room
	pc   *webrtc.PeerConnection

	mu        sync.Mutex
	connected bool
	timer     *time.Timer
	closeOnce sync.Once
	closeErr  error
}

// AddPublisher answers a WHIP offer (RFC 9725) that sends Opus audio. Its
// audio is decoded to 16 kHz mono and handed to RoomOptions.OnAudio. A video
// section in the offer is not taken. Errors wrap ErrInvalidSDP, ErrRoomFull
// (Config.MaxPublishersPerRoom) or ErrClosed where they apply.
func (r *Room) AddPublisher(ctx context.Context, offerSDP string) (publisherID, answerSDP string, err error) {
	if _, err := checkOffer(offerSDP, rolePublisher); err != nil {
		return "", "", fmt.Errorf("sfu: room %s: add publisher: %w", r.id, err)
	}
	p := &publisher{id: newPeerID(), room: r}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return "", "", fmt.Errorf("sfu: room %s: add publisher: %w", r.id, ErrClosed)
	case len(r.publishers) >= r.sfu.cfg.MaxPublishersPerRoom:
		r.mu.Unlock()
		return "", "", fmt.Errorf("sfu: room %s: add publisher: %d publishers: %w", r.id, r.sfu.cfg.MaxPublishersPerRoom, ErrRoomFull)
	}
	r.publishers[p.id] = p
	r.mu.Unlock()

	answer, err := p.negotiate(ctx, offerSDP)
	if err != nil {
		r.dropPublisher(p)
		return "", "", fmt.Errorf("sfu: room %s: add publisher: %w", r.id, err)
	}
	r.log.Info("sfu: publisher added", "publisher", p.id)
	return p.id, answer, nil
}

func (p *publisher) negotiate(ctx context.Context, offer string) (string, error) {
	r := p.room
	s := r.sfu
	// A publisher only receives: receiver reports keep the browser's
	// sender statistics and congestion control fed. Opus needs no NACK.
	api := s.newAPI(s.receiverReports)
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", fmt.Errorf("new peer connection: %w", err)
	}
	p.mu.Lock()
	p.pc = pc
	p.mu.Unlock()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return "", fmt.Errorf("add audio transceiver: %w", err)
	}
	pc.OnConnectionStateChange(p.onState)
	pc.OnTrack(func(track *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		if track.Kind() != webrtc.RTPCodecTypeAudio {
			return
		}
		r.goPeer(func() { p.readAudio(track) })
		r.goPeer(func() { drainRTCP(recv) })
	})
	answer, err := answerOffer(ctx, pc, offer)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = time.AfterFunc(s.cfg.ConnectTimeout, func() {
		p.mu.Lock()
		up := p.connected
		p.mu.Unlock()
		if !up {
			r.log.Info("sfu: publisher never connected", "publisher", p.id)
			r.goPeer(func() { r.dropPublisher(p) })
		}
	})
	return answer, nil
}

func (p *publisher) onState(st webrtc.PeerConnectionState) {
	r := p.room
	switch st {
	case webrtc.PeerConnectionStateConnected:
		p.mu.Lock()
		p.connected = true
		p.mu.Unlock()
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		r.log.Info("sfu: publisher gone", "publisher", p.id, "state", st.String())
		r.goPeer(func() { r.dropPublisher(p) })
	}
}

// readAudio decodes the publisher's Opus track to 16 kHz PCM for OnAudio,
// in order, until the track ends.
func (p *publisher) readAudio(track *webrtc.TrackRemote) {
	log := p.room.log.With("publisher", p.id)
	dec, err := opusdec.New(pcmRate)
	if err != nil {
		log.Error("sfu: publisher audio", "err", err)
		return
	}
	emit := func(pcm []float32) {
		if p.room.opts.OnAudio != nil {
			p.room.opts.OnAudio(pcm)
		}
	}
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			log.Debug("sfu: publisher audio ended", "err", err, "concealed", dec.Concealed, "late", dec.Dropped)
			return
		}
		if err := dec.Decode(pkt.SequenceNumber, pkt.Payload, emit); err != nil {
			log.Debug("sfu: publisher audio packet", "err", err)
		}
	}
}

// drainRTCP reads a receiver's RTCP (the browser's sender reports) so the
// receiver-report interceptor sees it, until the connection closes.
func drainRTCP(recv *webrtc.RTPReceiver) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := recv.Read(buf); err != nil {
			return
		}
	}
}

// RemovePublisher ends a publisher. An unknown id is not an error.
func (r *Room) RemovePublisher(id string) error {
	r.mu.Lock()
	p, ok := r.publishers[id]
	if ok {
		delete(r.publishers, id)
	}
	r.mu.Unlock()
	if !ok {
		return nil
	}
	r.log.Info("sfu: publisher removed", "publisher", id)
	return p.close()
}

func (r *Room) dropPublisher(p *publisher) {
	r.mu.Lock()
	cur, ok := r.publishers[p.id]
	if ok && cur == p {
		delete(r.publishers, p.id)
	}
	r.mu.Unlock()
	if ok && cur == p {
		_ = p.close()
	}
}

func (p *publisher) close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		if p.timer != nil {
			p.timer.Stop()
		}
		pc := p.pc
		p.mu.Unlock()
		if pc != nil {
			if err := pc.GracefulClose(); err != nil && !errors.Is(err, webrtc.ErrConnectionClosed) {
				p.closeErr = fmt.Errorf("sfu: close publisher %s: %w", p.id, err)
			}
		}
	})
	return p.closeErr
}
