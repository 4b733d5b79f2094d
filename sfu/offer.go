package sfu

import (
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// MaxOfferBytes bounds an offer; real offers are a few KiB.
const MaxOfferBytes = 64 << 10

// offerMedia is what a checked offer asks for.
type offerMedia struct {
	video, audio bool // a usable section of that kind
}

// peerRole is the side of the room an offer comes from.
type peerRole int

const (
	roleViewer    peerRole = iota // WHEP: receives the room's VP8 and Opus
	rolePublisher                 // WHIP: sends Opus
)

func (r peerRole) String() string {
	if r == rolePublisher {
		return "publisher"
	}
	return "viewer"
}

// checkOffer parses an offer with pion/sdp before Pion's PeerConnection sees
// it, and says which of the room's media it can carry. A viewer needs a
// video section offering VP8 or an audio section offering Opus that it can
// receive (recvonly or sendrecv); a publisher needs an audio section offering
// Opus that it sends (sendonly or sendrecv). Errors wrap ErrInvalidSDP and
// say what is wrong.
func checkOffer(raw string, role peerRole) (offerMedia, error) {
	var got offerMedia
	if strings.TrimSpace(raw) == "" {
		return got, fmt.Errorf("%w: empty offer", ErrInvalidSDP)
	}
	if len(raw) > MaxOfferBytes {
		return got, fmt.Errorf("%w: offer is %d bytes, more than %d", ErrInvalidSDP, len(raw), MaxOfferBytes)
	}
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		return got, fmt.Errorf("%w: does not parse: %v", ErrInvalidSDP, err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return got, fmt.Errorf("%w: no media sections", ErrInvalidSDP)
	}
	_, sessUfrag := sd.Attribute("ice-ufrag")
	_, sessPwd := sd.Attribute("ice-pwd")
	sessFPValue, sessFP := sd.Attribute("fingerprint")
	if sessFP && !validFingerprint(sessFPValue) {
		return got, fmt.Errorf("%w: malformed DTLS fingerprint %q", ErrInvalidSDP, sessFPValue)
	}
	var reasons []string
	for i, m := range sd.MediaDescriptions {
		kind := m.MediaName.Media
		why := usableSection(m, role)
		if why == "" {
			_, ufrag := m.Attribute("ice-ufrag")
			_, pwd := m.Attribute("ice-pwd")
			fpValue, fp := m.Attribute("fingerprint")
			switch {
			case fp && !validFingerprint(fpValue):
				why = fmt.Sprintf("malformed DTLS fingerprint %q", fpValue)
			case !(ufrag || sessUfrag) || !(pwd || sessPwd):
				why = "no ICE credentials (ice-ufrag, ice-pwd)"
			case !(fp || sessFP):
				why = "no DTLS fingerprint"
			}
		}
		if why != "" {
			reasons = append(reasons, fmt.Sprintf("m=%s #%d: %s", kind, i, why))
			continue
		}
		switch kind {
		case "video":
			got.video = true
		case "audio":
			got.audio = true
		}
	}
	switch {
	case role == rolePublisher && !got.audio:
		return got, fmt.Errorf("%w: a WHIP publisher must send an Opus audio section (%s)", ErrInvalidSDP, strings.Join(reasons, "; "))
	case role == roleViewer && !got.video && !got.audio:
		return got, fmt.Errorf("%w: a WHEP viewer must receive a VP8 video or Opus audio section (%s)", ErrInvalidSDP, strings.Join(reasons, "; "))
	case role == rolePublisher:
		got.video = false // a publisher's video is not taken
	}
	return got, nil
}

// usableSection returns why m cannot carry the room's media for role, or ""
// if it can.
func usableSection(m *sdp.MediaDescription, role peerRole) string {
	var codec string
	switch m.MediaName.Media {
	case "video":
		if role == rolePublisher {
			return "publishers send audio only"
		}
		codec = "vp8"
	case "audio":
		codec = "opus"
	default:
		return "not audio or video"
	}
	if m.MediaName.Port.Value == 0 {
		return "rejected (port 0)"
	}
	if !strings.Contains(strings.Join(m.MediaName.Protos, "/"), "SAVP") {
		return fmt.Sprintf("transport %q is not SRTP", strings.Join(m.MediaName.Protos, "/"))
	}
	dir := "sendrecv"
	for _, d := range []string{"sendrecv", "sendonly", "recvonly", "inactive"} {
		if _, ok := m.Attribute(d); ok {
			dir = d
		}
	}
	switch {
	case role == roleViewer && dir != "recvonly" && dir != "sendrecv":
		return fmt.Sprintf("direction %s cannot receive", dir)
	case role == rolePublisher && dir != "sendonly" && dir != "sendrecv":
		return fmt.Sprintf("direction %s does not send", dir)
	}
	for _, a := range m.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		// "<pt> <name>/<clock>[/<channels>]"
		_, enc, ok := strings.Cut(a.Value, " ")
		name, _, _ := strings.Cut(enc, "/")
		if ok && strings.EqualFold(name, codec) {
			return ""
		}
	}
	return fmt.Sprintf("does not offer %s", codec)
}

// validFingerprint checks an a=fingerprint value (RFC 8122): a hash
// function Pion knows and its colon-separated hex digest of the right size.
func validFingerprint(v string) bool {
	hash, digest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return false
	}
	size := map[string]int{"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}[strings.ToLower(hash)]
	parts := strings.Split(digest, ":")
	if size == 0 || len(parts) != size {
		return false
	}
	for _, p := range parts {
		if len(p) != 2 || strings.Trim(p, "0123456789abcdefABCDEF") != "" {
			return false
		}
	}
	return true
}
