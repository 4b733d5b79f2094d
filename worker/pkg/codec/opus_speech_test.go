package codec

import (
	"context"
	"fmt"
	"math"
	"testing"

	"gopkg.in/hraban/opus.v2"

	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// speech16k is espeak-ng's reading of a few sentences at 16 kHz: the audio
// a session encodes most.
func speech16k(tb testing.TB) []float32 {
	tb.Helper()
	e, err := tts.NewEspeak(context.Background(), tts.EspeakOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	a, err := e.Synthesize(context.Background(), "The quick brown fox jumps over the lazy dog. "+
		"Real-time talking avatars are served to browsers over WebRTC, many sessions at once.", "")
	if err != nil {
		tb.Fatal(err)
	}
	return a.Samples
}

// speechSNR encodes pcm at 16 kHz and complexity cx, decodes it and returns
// the waveform's signal-to-noise ratio in dB, at the decoder's delay.
func speechSNR(t *testing.T, pcm []float32, cx int) float64 {
	t.Helper()
	e := newOpus(t, OpusOptions{SampleRate: 16000, Complexity: cx})
	d, err := opus.NewDecoder(16000, 1)
	if err != nil {
		t.Fatal(err)
	}
	const fr = 320
	var out []float32
	buf := make([]float32, fr)
	for i := 0; i+fr <= len(pcm); i += fr {
		pkt, err := e.EncodeFloat32(pcm[i : i+fr])
		if err != nil {
			t.Fatal(err)
		}
		n, err := d.DecodeFloat32(pkt, buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:n]...)
	}
	best := math.Inf(-1)
	for lag := range 400 { // libopus's delay at 16 kHz is well under 25 ms
		var sig, noise float64
		for i := 0; i+lag < len(out); i++ {
			d := float64(out[i+lag] - pcm[i])
			sig += float64(pcm[i]) * float64(pcm[i])
			noise += d * d
		}
		best = max(best, 10*math.Log10(sig/noise))
	}
	return best
}

// The default complexity keeps speech within a dB of libopus's best
// (complexity 10), measured on the decoded waveform; the figures are the
// ones the default's comment quotes.
func TestOpusSpeechComplexity(t *testing.T) {
	pcm := speech16k(t)
	best := speechSNR(t, pcm, 10)
	for _, cx := range []int{1, 3, 5} {
		snr := speechSNR(t, pcm, cx)
		t.Logf("complexity %d: SNR %.2f dB (10: %.2f dB)", cx, snr, best)
		if cx == DefaultOpusComplexity && snr < best-1 {
			t.Errorf("default complexity %d: SNR %.2f dB, %.2f dB below complexity 10", cx, snr, best-snr)
		}
	}
}

// BenchmarkOpusSpeech is the cost of one 20 ms frame of 16 kHz speech by
// complexity.
func BenchmarkOpusSpeech(b *testing.B) {
	pcm := speech16k(b)
	const fr = 320
	for _, cx := range []int{1, 3, 5, 10} {
		b.Run(fmt.Sprintf("complexity=%d", cx), func(b *testing.B) {
			e := newOpus(b, OpusOptions{SampleRate: 16000, Complexity: cx})
			i := 0
			for b.Loop() {
				if _, err := e.EncodeFloat32(pcm[i*fr : (i+1)*fr]); err != nil {
					b.Fatal(err)
				}
				i = (i + 1) % (len(pcm) / fr)
			}
		})
	}
}
