package sfu

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// pionOffer is a real offer from a Pion peer (recvonly VP8 + Opus).
func pionOffer(t testing.TB) string {
	t.Helper()
	_, offer := newClient(t, clientOptions{video: true, audio: true}, nil)
	return offer
}

func TestInvalidSDP(t *testing.T) {
	s := newTestSFU(t, Config{})
	room, err := s.OpenRoom("sdp", RoomOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := pionOffer(t)
	video := good[:strings.Index(good, "m=audio")] // session + video section only
	for _, tc := range []struct{ name, offer, want string }{
		{"empty", "", "empty offer"},
		{"garbage", "hello world", "does not parse"},
		{"binary", "\x00\x01\x02v=0\r\n", "does not parse"},
		{"too big", good + strings.Repeat("a=x\r\n", MaxOfferBytes/5), "more than"},
		{"no media", good[:strings.Index(good, "m=")], "no media sections"},
		{"H264 only", strings.ReplaceAll(strings.ReplaceAll(good, "VP8", "H264"), "opus", "G722"), "does not offer vp8"},
		{"sendonly", strings.ReplaceAll(good, "a=recvonly", "a=sendonly"), "cannot receive"},
		{"rejected", strings.ReplaceAll(strings.ReplaceAll(good, "m=video 9", "m=video 0"), "m=audio 9", "m=audio 0"), "port 0"},
		{"no ICE", strings.ReplaceAll(good, "a=ice-ufrag", "a=x-ufrag"), "no ICE credentials"},
		{"no fingerprint", strings.ReplaceAll(good, "a=fingerprint", "a=x-fingerprint"), "no DTLS fingerprint"},
		{"plain RTP", strings.ReplaceAll(good, "UDP/TLS/RTP/SAVPF", "RTP/AVP"), "not SRTP"},
		{"bad fingerprint", strings.Replace(good, "sha-256 ", "sha-256 ZZ", 1), "malformed DTLS fingerprint"},
		{"no mid", strings.ReplaceAll(good, "a=mid:", "a=x-mid:"), "WebRTC stack"},
	} {
		_, _, err := room.AddViewer(context.Background(), tc.offer)
		if !errors.Is(err, ErrInvalidSDP) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrInvalidSDP saying %q", tc.name, err, tc.want)
		}
	}
	// A publisher must send audio.
	for _, tc := range []struct{ name, offer string }{
		{"viewer offer", good},
		{"video only", video},
	} {
		if _, _, err := room.AddPublisher(context.Background(), tc.offer); !errors.Is(err, ErrInvalidSDP) {
			t.Errorf("publisher %s: got %v, want ErrInvalidSDP", tc.name, err)
		}
	}
	// A video-only viewer is fine.
	if _, _, err := room.AddViewer(context.Background(), video); err != nil {
		t.Errorf("video-only viewer: %v", err)
	}
	if room.Viewers() != 1 {
		t.Errorf("failed offers left viewers behind: %d", room.Viewers())
	}
}

// FuzzOffer feeds arbitrary offers through checking and AddViewer: any
// input is either answered or refused with ErrInvalidSDP, never a panic.
func FuzzOffer(f *testing.F) {
	good := pionOffer(f)
	f.Add(good)
	f.Add("")
	f.Add("v=0\r\n")
	f.Add("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=recvonly\r\n")
	f.Add(strings.ReplaceAll(good, "\r\n", "\n"))
	f.Add(good[:len(good)/2])
	f.Add("\xff\xfe garbage \x00")
	s := newTestSFU(f, Config{MaxViewersPerRoom: 1 << 20, Logger: testLogger()})
	room, err := s.OpenRoom("fuzz", RoomOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, offer string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		id, answer, err := room.AddViewer(ctx, offer)
		if err != nil {
			if !errors.Is(err, ErrInvalidSDP) {
				t.Fatalf("error %v does not wrap ErrInvalidSDP", err)
			}
			return
		}
		if !strings.HasPrefix(answer, "v=0") {
			t.Fatalf("answer %q", answer)
		}
		if err := room.RemoveViewer(id); err != nil {
			t.Fatal(err)
		}
	})
}
