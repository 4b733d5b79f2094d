package onnxgen

import (
	"context"
	"math"
	"testing"

	"github.com/avatarfleet/avatarfleet/worker/pkg/melspec"
	"github.com/avatarfleet/avatarfleet/worker/pkg/tts"
)

// voicedFeatures speaks text with espeak-ng and returns the mean open
// amount and spread b of the default model's features over the windows
// whose loudness opens the mouth by at least 0.3.
func voicedFeatures(t *testing.T, es *tts.Espeak, text string) (a, b float64) {
	t.Helper()
	audio, err := es.Synthesize(context.Background(), text, "")
	if err != nil {
		t.Fatal(err)
	}
	mel := melspec.New().Compute(audio.Samples)
	w, bias := featureWeights(DefaultLookAheadMS)
	sig := func(z float64) float64 { return 1 / (1 + math.Exp(-z)) }
	var n int
	for start := 0; start+MelFrames <= len(mel); start++ {
		var z [2]float64
		for ch := range 2 {
			z[ch] = float64(bias[ch])
			for band := range MelBands {
				for f := range MelFrames {
					z[ch] += float64(w[ch*MelBands*MelFrames+band*MelFrames+f]) * float64(mel[start+f][band])
				}
			}
		}
		if sig(z[0]) < 0.3 {
			continue
		}
		a += sig(z[0])
		b += sig(z[1])
		n++
	}
	if n < 5 {
		t.Fatalf("%q: %d voiced windows", text, n)
	}
	return a / float64(n), b / float64(n)
}

// TestSpreadOnSpeech: on espeak-ng's words, the spread feature tells the
// rounded vowels (o, u: the mouth narrows) from spread and open ones (i, e:
// the mouth wide, teeth showing; a).
func TestSpreadOnSpeech(t *testing.T) {
	es, err := tts.NewEspeak(context.Background(), tts.EspeakOptions{})
	if err != nil {
		t.Fatalf("espeak-ng: %v (run scripts/setup.sh first)", err)
	}
	aee, ee := voicedFeatures(t, es, "bee, me, tea, see, keep these.")
	aah, ah := voicedFeatures(t, es, "father, car, hot, far, palm.")
	aoo, oo := voicedFeatures(t, es, "boo, do, moo, two, who, ooh.")
	t.Logf("mean a and b of voiced windows: i %.2f %.2f; a %.2f %.2f; u %.2f %.2f", aee, ee, aah, ah, aoo, oo)
	if ee < oo+0.3 || ah < oo+0.3 {
		t.Errorf("b = %.2f for i, %.2f for a, %.2f for u; want the rounded u clearly below both", ee, ah, oo)
	}
	// The open a opens the mouth wider than the close i.
	if aah < aee+0.2 {
		t.Errorf("a = %.2f for the open vowel, %.2f for the close one; want the open one clearly wider", aah, aee)
	}
}
