package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

// browserOffer is a WHEP offer as a browser makes it (recvonly audio and
// video, bundled, one host candidate).
const browserOffer = "v=0\r\n" +
	"o=- 4215775240449105457 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0 1\r\n" +
	"a=extmap-allow-mixed\r\n" +
	"a=msid-semantic: WMS\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=rtcp:9 IN IP4 0.0.0.0\r\n" +
	"a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n" +
	"a=ice-ufrag:EsAw\r\n" +
	"a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n" +
	"a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:AD:30:BC:BD:F1:9C:02\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:0\r\n" +
	"a=recvonly\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=fmtp:111 minptime=10;useinbandfec=1\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=rtcp:9 IN IP4 0.0.0.0\r\n" +
	"a=ice-ufrag:EsAw\r\n" +
	"a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n" +
	"a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:AD:30:BC:BD:F1:9C:02\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:1\r\n" +
	"a=recvonly\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:96 VP8/90000\r\n"

// FuzzWHEPOffer feeds arbitrary bodies and content types to the validation
// of the WHEP (and WHIP) handlers: it must never panic, refuse with a 4xx
// API error carrying a code, and accept only offers that parse with media.
func FuzzWHEPOffer(f *testing.F) {
	sendonly := strings.ReplaceAll(browserOffer, "a=recvonly", "a=sendonly")
	for _, seed := range []string{
		browserOffer, sendonly, "", "v=0\r\n", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
		"m=audio 9 RTP/AVP 0\r\n", "v=0\r\nm=", "\xff\xfe", strings.Repeat("a=x\r\n", 20000),
		strings.ReplaceAll(browserOffer, "\r\n", "\n"), strings.Replace(browserOffer, "m=video 9", "m=video x", 1),
	} {
		f.Add(seed, "application/sdp", false)
		f.Add(seed, "application/sdp", true)
	}
	f.Add(browserOffer, "application/sdp; charset=utf-8", false)
	f.Add(browserOffer, "text/plain", false)
	f.Add(browserOffer, "", true)
	f.Add(browserOffer, "application/sdp;;", false)
	f.Fuzz(func(t *testing.T, body, contentType string, whip bool) {
		kind := viewerOffer
		if whip {
			kind = publisherOffer
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/sessions/sess_x/whep", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		offer, err := parseOffer(w, r, kind)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 || ae.code == "" {
				t.Fatalf("body %q (%s): error %v is not a 4xx API error", body, contentType, err)
			}
			return
		}
		if offer != body || len(body) > maxSDPBody {
			t.Fatalf("accepted %d bytes, changed or over the limit", len(body))
		}
		var sd sdp.SessionDescription
		if err := sd.UnmarshalString(offer); err != nil || len(sd.MediaDescriptions) == 0 {
			t.Fatalf("accepted an offer that does not parse or has no media: %v", err)
		}
	})
}
