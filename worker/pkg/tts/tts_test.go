package tts

import (
	"errors"
	"math"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/avatarfleet/avatarfleet/proto/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(repotest.WatchHangs(m)) }

// Both engines implement Engine.
var (
	_ Engine = (*Espeak)(nil)
	_ Engine = (*HTTP)(nil)
)

func TestCheckVoice(t *testing.T) {
	for _, ok := range []string{"en-us", "a", "en_GB.x-1", "Z9", strings.Repeat("a", 64)} {
		if err := CheckVoice(ok); err != nil {
			t.Errorf("CheckVoice(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "-v", ".x", "_x", "en us", "en/us", "../etc", "a;b", "é", "en\n",
		"en-us+f3", strings.Repeat("a", 65)} {
		if err := CheckVoice(bad); !errors.Is(err, ErrInvalidVoice) {
			t.Errorf("CheckVoice(%q) = %v, want ErrInvalidVoice", bad, err)
		}
	}
}

func TestAudioDuration(t *testing.T) {
	if d := (Audio{Samples: make([]float32, 24000)}).Duration(); d.Seconds() != 1.5 {
		t.Fatalf("Duration = %v, want 1.5s", d)
	}
}

func TestBoundedBuffer(t *testing.T) {
	b := &boundedBuffer{max: 4}
	for _, s := range []string{"ab", "cdef", "g"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got, want := b.String(), "abcd… (3 more bytes)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

// rms is the root mean square of s.
func rms(s []float32) float64 {
	var sum float64
	for _, v := range s {
		sum += float64(v) * float64(v)
	}
	if len(s) == 0 {
		return 0
	}
	return math.Sqrt(sum / float64(len(s)))
}
