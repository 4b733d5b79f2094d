package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/pion/sdp/v3"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// maxSDPBody bounds a WHEP/WHIP offer (the worker accepts the same).
const maxSDPBody = 64 << 10

// offerKind is what an offer must ask for: WHEP viewers receive audio or
// video; WHIP publishers send audio (it drives the avatar's lips).
type offerKind int

const (
	viewerOffer offerKind = iota
	publisherOffer
)

// parseOffer reads and checks a WHEP/WHIP request body: Content-Type
// application/sdp (415), at most maxSDPBody bytes (413), an SDP offer that
// parses and offers media in the right direction (400 invalid_sdp). It
// never panics: a panic inside the SDP parser is a 400 too.
func parseOffer(w http.ResponseWriter, r *http.Request, kind offerKind) (string, error) {
	if !hasMediaType(r, "application/sdp") {
		return "", errorf(http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedMediaType, "body must be an application/sdp offer")
	}
	body, err := readLimited(w, r, maxSDPBody)
	if err != nil {
		return "", err
	}
	if err := checkOffer(body, kind); err != nil {
		return "", err
	}
	return string(body), nil
}

func invalidSDP(format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > 200 {
		msg = strings.ToValidUTF8(msg[:200], "") + "…"
	}
	return errorf(http.StatusBadRequest, apiv1.CodeInvalidSDP, "%s", msg)
}

// checkOffer validates an SDP offer with pion/sdp.
func checkOffer(body []byte, kind offerKind) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = invalidSDP("offer does not parse")
		}
	}()
	if len(body) == 0 {
		return invalidSDP("empty body: want an SDP offer")
	}
	if !utf8.Valid(body) {
		return invalidSDP("offer is not UTF-8")
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		return invalidSDP("offer does not parse: %v", err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return invalidSDP("offer has no media section")
	}
	sessionDir := direction(sd.Attributes, "sendrecv")
	for _, m := range sd.MediaDescriptions {
		media := m.MediaName.Media
		dir := direction(m.Attributes, sessionDir)
		switch kind {
		case viewerOffer:
			if (media == "audio" || media == "video") && (dir == "recvonly" || dir == "sendrecv") {
				return nil
			}
		case publisherOffer:
			if media == "audio" && (dir == "sendonly" || dir == "sendrecv") {
				return nil
			}
		}
	}
	if kind == publisherOffer {
		return invalidSDP("WHIP offer sends no audio: want an m=audio section that is sendonly or sendrecv")
	}
	return invalidSDP("WHEP offer receives no media: want an m=audio or m=video section that is recvonly or sendrecv")
}

// direction is the direction attribute among attrs, else def.
func direction(attrs []sdp.Attribute, def string) string {
	for _, a := range attrs {
		switch a.Key {
		case "sendrecv", "sendonly", "recvonly", "inactive":
			return a.Key
		}
	}
	return def
}

// iceServerLinks renders STUN/TURN servers as WHEP/WHIP Link header values:
//
//	<turn:turn.example.net?transport=udp>; rel="ice-server"; username="u"; credential="p"; credential-type="password"
//
// A URL that cannot sit between angle brackets is left out.
func iceServerLinks(servers []*fleetv1.IceServer) []string {
	var out []string
	for _, s := range servers {
		for _, u := range s.GetUrls() {
			if u == "" || strings.ContainsAny(u, "<>\"\r\n\t ") || !utf8.ValidString(u) {
				continue
			}
			l := "<" + u + `>; rel="ice-server"`
			if s.GetUsername() != "" {
				l += "; username=" + quote(s.GetUsername())
			}
			if s.GetCredential() != "" {
				l += "; credential=" + quote(s.GetCredential()) + `; credential-type="password"`
			}
			out = append(out, l)
		}
	}
	return out
}

// quote makes an RFC 9110 quoted-string; control characters are dropped.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
