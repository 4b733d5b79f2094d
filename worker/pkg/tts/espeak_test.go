package tts

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
)

// newEspeak returns an Espeak engine. A missing espeak-ng fails the test:
// scripts/setup.sh (run by make test) installs it.
func newEspeak(t testing.TB, opt EspeakOptions) *Espeak {
	t.Helper()
	if _, err := exec.LookPath(espeakProgram); err != nil {
		t.Fatalf("espeak-ng is not installed; run scripts/setup.sh: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := NewEspeak(ctx, opt)
	if err != nil {
		t.Fatalf("NewEspeak: %v", err)
	}
	return e
}

func TestEspeakHelloWorld(t *testing.T) {
	e := newEspeak(t, EspeakOptions{})
	for _, voice := range []string{"", DefaultVoice, "en-us", "en"} {
		start := time.Now()
		a, err := e.Synthesize(context.Background(), "Hello world", voice)
		if err != nil {
			t.Fatalf("Synthesize(voice %q): %v", voice, err)
		}
		t.Logf("voice %q: %v of audio in %v", voice, a.Duration(), time.Since(start))
		if d := a.Duration(); d < 500*time.Millisecond || d > 3*time.Second {
			t.Errorf("voice %q: duration %v, want 0.5..3 s", voice, d)
		}
		if r := rms(a.Samples); r < 0.01 {
			t.Errorf("voice %q: RMS %.4f, want audible speech", voice, r)
		}
	}

	// The samples are at 16 kHz: espeak-ng's own output (22050 Hz), decoded
	// directly, has the same duration.
	cmd := exec.Command(espeakProgram, "-v", "en-us", "--stdout", "Hello world")
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("espeak-ng: %v", err)
	}
	ref, err := wav.Parse(raw, wav.Options{})
	if err != nil {
		t.Fatalf("wav.Parse: %v", err)
	}
	a, err := e.Synthesize(context.Background(), "Hello world", "en-us")
	if err != nil {
		t.Fatal(err)
	}
	want := (len(ref.Samples)*SampleRate + ref.SampleRate - 1) / ref.SampleRate
	if ref.SampleRate == SampleRate || len(a.Samples) != want {
		t.Errorf("got %d samples; espeak-ng wrote %d at %d Hz, want %d at %d Hz",
			len(a.Samples), len(ref.Samples), ref.SampleRate, want, SampleRate)
	}
}

func TestEspeakSpeed(t *testing.T) {
	const text = "Speaking faster makes this sentence shorter."
	normal, err := newEspeak(t, EspeakOptions{}).Synthesize(context.Background(), text, "")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := newEspeak(t, EspeakOptions{Speed: 350}).Synthesize(context.Background(), text, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := fast.Duration().Seconds() / normal.Duration().Seconds(); r > 0.75 {
		t.Fatalf("Speed 350: %v, default: %v; want clearly shorter", fast.Duration(), normal.Duration())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newEspeak(t, EspeakOptions{}).Synthesize(ctx, text, ""); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: err = %v", err)
	}
}

func TestEspeakVoices(t *testing.T) {
	e := newEspeak(t, EspeakOptions{})
	v := e.Voices()
	if !slices.Contains(v, "en-us") || !slices.IsSorted(v) {
		t.Fatalf("Voices() = %v, want sorted and holding en-us", v)
	}
	v[0] = "changed"
	if e.Voices()[0] == "changed" {
		t.Fatal("Voices returns the engine's own slice")
	}
}

func TestParseEspeakVoices(t *testing.T) {
	out := []byte(`Pty Language       Age/Gender VoiceName          File                 Other Languages
 2  en-gb           --/M      English_(Great_Britain) gmw/en               (en 2)
 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)(en-x 4)
 5  en-us           --/F      us-mbrola-1        mb/mb-us1            (en 8)
 5  xx              --/F      mbonly             mb/mb-xx
 5  fr-fr           --/M      French             roa/fr
 5  bad/name        --/M      Bad                x/y
short line
`)
	voices, known := parseEspeakVoices(out)
	if want := []string{"en-gb", "en-us", "fr-fr"}; !slices.Equal(voices, want) {
		t.Errorf("voices = %v, want %v", voices, want)
	}
	for _, k := range []string{"en-gb", "en-us", "en", "en-x", "french", "fr-fr"} {
		if !known[k] {
			t.Errorf("%q not known", k)
		}
	}
	for _, k := range []string{"xx", "mbonly", "bad/name", "english_(america)", "us-mbrola-1"} {
		if known[k] {
			t.Errorf("%q known, want not", k)
		}
	}
}

func TestEspeakInvalid(t *testing.T) {
	e := newEspeak(t, EspeakOptions{MaxTextBytes: 100})
	ctx := context.Background()
	for _, voice := range []string{"nosuchvoice", "-v", "../../etc/passwd", "en us", "en-us+f3", "--stdin"} {
		if _, err := e.Synthesize(ctx, "Hello", voice); !errors.Is(err, ErrInvalidVoice) {
			t.Errorf("voice %q: err = %v, want ErrInvalidVoice", voice, err)
		}
	}
	if _, err := e.Synthesize(ctx, strings.Repeat("a", 101), ""); !errors.Is(err, ErrInvalidText) {
		t.Errorf("long text: err = %v, want ErrInvalidText", err)
	}
	if _, err := e.Synthesize(ctx, "a\x00b", ""); !errors.Is(err, ErrInvalidText) {
		t.Errorf("NUL: err = %v, want ErrInvalidText", err)
	}
	if a, err := e.Synthesize(ctx, " \n ", ""); err != nil || len(a.Samples) != 0 {
		t.Errorf("blank text: %d samples, %v; want none, nil", len(a.Samples), err)
	}
	for _, opt := range []EspeakOptions{
		{Path: filepath.Join(t.TempDir(), "no-espeak")}, {DefaultVoice: "nosuchvoice"},
		{DefaultVoice: "a b"}, {Speed: 10}, {MaxBytes: -1},
	} {
		if _, err := NewEspeak(ctx, opt); !errors.Is(err, ErrConfig) {
			t.Errorf("NewEspeak(%+v): err = %v, want ErrConfig", opt, err)
		}
	}
}

// Text that looks like options is spoken, not obeyed: it goes through stdin.
func TestEspeakTextIsNotOptions(t *testing.T) {
	e := newEspeak(t, EspeakOptions{})
	for _, text := range []string{"--help", "-v fr --voices", "$(reboot); `id` | cat"} {
		a, err := e.Synthesize(context.Background(), text, "")
		if err != nil || rms(a.Samples) < 0.01 {
			t.Errorf("%q: RMS %.4f, err %v; want speech", text, rms(a.Samples), err)
		}
	}
}

func TestEspeakOutputLimit(t *testing.T) {
	e := newEspeak(t, EspeakOptions{MaxBytes: 20000})
	_, err := e.Synthesize(context.Background(), strings.Repeat("This sentence is long enough. ", 20), "")
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	waitNoEspeakChild(t)
}

func TestEspeakCancelKillsProcess(t *testing.T) {
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 5000) // ~30 s of CPU
	e := newEspeak(t, EspeakOptions{MaxTextBytes: len(text), MaxBytes: 1 << 30})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := e.Synthesize(ctx, text, "")
	took := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if took > 2*time.Second {
		t.Errorf("Synthesize returned %v after the start, %v after the cancel", took, took-300*time.Millisecond)
	}
	t.Logf("returned %v after cancel", took-300*time.Millisecond)
	waitNoEspeakChild(t)

	// A context that ends by deadline reports that too.
	ctx, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := e.Synthesize(ctx, text, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	waitNoEspeakChild(t)
}

// waitNoEspeakChild fails the test if an espeak-ng child of this process is
// still there (running or not reaped) shortly after a call returned.
func waitNoEspeakChild(t *testing.T) {
	t.Helper()
	var left []string
	for range 50 {
		left = espeakChildren(t)
		if len(left) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("espeak-ng children left: %v", left)
}

// espeakChildren lists the /proc/PID/stat lines of this process's
// espeak-ng children (Linux only; elsewhere it finds none).
func espeakChildren(t *testing.T) []string {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	var out []string
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(espeak-ng") {
			continue
		}
		if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == self {
			out = append(out, strings.TrimSpace(s[:i+3]))
		}
	}
	return out
}

func BenchmarkEspeakSentence(b *testing.B) {
	e := newEspeak(b, EspeakOptions{})
	const text = "Hello, I am your virtual assistant, and I am happy to help you today."
	var audio time.Duration
	for b.Loop() {
		a, err := e.Synthesize(context.Background(), text, "")
		if err != nil {
			b.Fatal(err)
		}
		audio = a.Duration()
	}
	b.ReportMetric(audio.Seconds(), "audio-s/op")
}
