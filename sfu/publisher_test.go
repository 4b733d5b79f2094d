package sfu

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"gopkg.in/hraban/opus.v2"
)

// dominantFrequency scans 50..4000 Hz in 5 Hz steps for the strongest
// component of pcm (sampled at rate).
func dominantFrequency(pcm []float32, rate float64) float64 {
	best, bestPower := 0.0, 0.0
	for f := 50.0; f <= 4000; f += 5 {
		// Goertzel
		w := 2 * math.Pi * f / rate
		c := 2 * math.Cos(w)
		var s1, s2 float64
		for _, x := range pcm {
			s0 := float64(x) + c*s1 - s2
			s2, s1 = s1, s0
		}
		if p := s1*s1 + s2*s2 - c*s1*s2; p > bestPower {
			best, bestPower = f, p
		}
	}
	return best
}

// TestPublisherAudio: a Pion peer publishes a 440 Hz tone as real Opus over
// WHIP; OnAudio gets 16 kHz PCM of that tone, in 20 ms frames.
func TestPublisherAudio(t *testing.T) {
	s := newTestSFU(t, Config{MaxPublishersPerRoom: 1})
	var mu sync.Mutex
	var pcm []float32
	frames := 0
	room, err := s.OpenRoom("whip", RoomOptions{OnAudio: func(p []float32) {
		mu.Lock()
		pcm = append(pcm, p...)
		frames++
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", "browser")
	if err != nil {
		t.Fatal(err)
	}
	c, offer := newClient(t, clientOptions{}, track)
	id, answer, err := room.AddPublisher(context.Background(), offer)
	if err != nil {
		t.Fatal(err)
	}
	c.answer(t, answer)
	if room.Stats().Publishers != 1 {
		t.Fatal("publisher not counted")
	}
	_, offer2 := newClient(t, clientOptions{}, track)
	if _, _, err := room.AddPublisher(context.Background(), offer2); !errors.Is(err, ErrRoomFull) {
		t.Fatalf("second publisher: %v, want ErrRoomFull", err)
	}
	waitFor(t, 10*time.Second, "publisher connected", func() bool { return c.pc.ConnectionState() == webrtc.PeerConnectionStateConnected })

	enc, err := opus.NewEncoder(48000, 1, opus.AppVoIP)
	if err != nil {
		t.Fatal(err)
	}
	const tone = 440.0
	frame := make([]float32, 960)
	buf := make([]byte, 1500)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 75; i++ { // 1.5 s
		for j := range frame {
			frame[j] = float32(0.4 * math.Sin(2*math.Pi*tone*float64(i*960+j)/48000))
		}
		n, err := enc.EncodeFloat32(frame, buf)
		if err != nil {
			t.Fatal(err)
		}
		if err := track.WriteSample(media.Sample{Data: append([]byte(nil), buf[:n]...), Duration: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	waitFor(t, 5*time.Second, "audio", func() bool { mu.Lock(); defer mu.Unlock(); return len(pcm) >= 16000 })

	mu.Lock()
	got := append([]float32(nil), pcm[len(pcm)-16000:]...) // the last second: past the codec's start-up
	perFrame := len(pcm) / frames
	mu.Unlock()
	if perFrame != 320 {
		t.Errorf("%d samples per OnAudio call, want 320 (20 ms at 16 kHz)", perFrame)
	}
	var peak float32
	for _, x := range got {
		peak = max(peak, x, -x)
	}
	if f := dominantFrequency(got, 16000); math.Abs(f-tone) > 10 || peak < 0.2 || peak > 1 {
		t.Fatalf("OnAudio got a %v Hz tone with peak %.2f, want %v Hz, ~0.4", f, peak, tone)
	} else {
		t.Logf("OnAudio: %d samples, dominant %v Hz, peak %.2f", len(pcm), f, peak)
	}
	if err := room.RemovePublisher(id); err != nil {
		t.Fatal(err)
	}
	if err := room.RemovePublisher(id); err != nil {
		t.Fatal(err)
	}
	if room.Stats().Publishers != 0 {
		t.Fatal("publisher still counted")
	}
}
