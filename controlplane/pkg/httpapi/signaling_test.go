package httpapi

import (
	"math"
	"slices"
	"strings"
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func TestCheckOffer(t *testing.T) {
	sendonly := strings.ReplaceAll(browserOffer, "a=recvonly", "a=sendonly")
	inactive := strings.ReplaceAll(browserOffer, "a=recvonly", "a=inactive")
	// No direction attribute means sendrecv (RFC 8866).
	noDirection := strings.ReplaceAll(browserOffer, "a=recvonly\r\n", "")
	videoOnlySend := sendonly[:strings.Index(sendonly, "m=audio")] + sendonly[strings.Index(sendonly, "m=video"):]
	tests := []struct {
		name   string
		body   string
		kind   offerKind
		wantOK bool
	}{
		{"WHEP recvonly", browserOffer, viewerOffer, true},
		{"WHEP sendrecv", noDirection, viewerOffer, true},
		{"WHEP sendonly", sendonly, viewerOffer, false},
		{"WHEP inactive", inactive, viewerOffer, false},
		{"WHIP sendonly audio", sendonly, publisherOffer, true},
		{"WHIP sendrecv audio", noDirection, publisherOffer, true},
		{"WHIP recvonly", browserOffer, publisherOffer, false},
		{"WHIP video only", videoOnlySend, publisherOffer, false},
		{"empty", "", viewerOffer, false},
		{"no media", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", viewerOffer, false},
		{"garbage", "hello", viewerOffer, false},
		{"not UTF-8", "v=0\r\n\xff", viewerOffer, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkOffer([]byte(tt.body), tt.kind)
			if (err == nil) != tt.wantOK {
				t.Fatalf("checkOffer: %v, want ok=%v", err, tt.wantOK)
			}
			if err != nil {
				if ae, ok := err.(*apiError); !ok || ae.status != 400 || ae.code != "invalid_sdp" {
					t.Fatalf("error %v, want 400 invalid_sdp", err)
				}
			}
		})
	}
}

func TestICEServerLinks(t *testing.T) {
	tests := []struct {
		name    string
		servers []*fleetv1.IceServer
		want    []string
	}{
		{"none", nil, nil},
		{"stun", []*fleetv1.IceServer{{Urls: []string{"stun:stun.l.google.com:19302"}}},
			[]string{`<stun:stun.l.google.com:19302>; rel="ice-server"`}},
		{"turn with credentials", []*fleetv1.IceServer{{Urls: []string{"turn:t.example:3478?transport=tcp"}, Username: "u", Credential: `p\w"d`}},
			[]string{`<turn:t.example:3478?transport=tcp>; rel="ice-server"; username="u"; credential="p\\w\"d"; credential-type="password"`}},
		{"header injection dropped", []*fleetv1.IceServer{{Urls: []string{"stun:a>\r\nX-Evil: 1", "", "stun:ok"}, Username: "u\r\nX: y"}},
			[]string{`<stun:ok>; rel="ice-server"; username="uX: y"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := iceServerLinks(tt.servers); !slices.Equal(got, tt.want) {
				t.Fatalf("links\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestToStats(t *testing.T) {
	if toStats(nil) != nil {
		t.Fatal("nil stats converted")
	}
	got := toStats(&fleetv1.SessionStats{
		VideoFramesSent: 250, VideoBitrateBps: math.NaN(), AudioBitrateBps: math.Inf(1), Publishers: 1,
		Viewers: []*fleetv1.ViewerStats{{Id: "v_1", State: "connected", PacketsSent: 9, NacksReceived: 2, PlisReceived: 3, FirsReceived: 4, RttMs: 12.5}},
	})
	if got.VideoFramesSent != 250 || got.VideoBitrateBPS != 0 || got.AudioBitrateBPS != 0 || got.Publishers != 1 {
		t.Fatalf("stats %+v", got)
	}
	v := got.Viewers[0]
	if v.ID != "v_1" || v.State != "connected" || v.PacketsSent != 9 || v.NACKs != 2 || v.PLIs != 3 || v.FIRs != 4 || v.RTTMillis != 12.5 || v.ConnectedAt != nil {
		t.Fatalf("viewer %+v", v)
	}
	if empty := toStats(&fleetv1.SessionStats{}); empty.Viewers == nil {
		t.Fatal("viewers must be [] not null")
	}
}
