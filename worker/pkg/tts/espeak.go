package tts

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Espeak defaults and limits.
const (
	espeakProgram      = "espeak-ng"
	espeakDefaultVoice = "en-us"
	// DefaultEspeakMaxText is EspeakOptions.MaxTextBytes when 0.
	DefaultEspeakMaxText = 16 << 10
	// DefaultEspeakMaxBytes is EspeakOptions.MaxBytes when 0: 32 MiB of
	// 16-bit 22050 Hz audio, about 12 minutes.
	DefaultEspeakMaxBytes = 32 << 20
	maxVoiceListBytes     = 1 << 20
	maxVoices             = 4096
	maxStderr             = 2048
	// espeakWaitDelay bounds how long Wait waits for the pipes after the
	// process is killed.
	espeakWaitDelay = 2 * time.Second
)

// EspeakOptions configures Espeak. The zero value is ready to use.
type EspeakOptions struct {
	// Path is the espeak-ng program, a path or a name looked up in $PATH;
	// "" means "espeak-ng".
	Path string
	// DefaultVoice is what DefaultVoice and "" stand for; "" means "en-us".
	DefaultVoice string
	// Speed is the speaking rate in words per minute (espeak-ng -s,
	// 80..450); 0 leaves espeak-ng's default (175).
	Speed int
	// MaxTextBytes is the longest text Synthesize accepts; 0 means
	// DefaultEspeakMaxText.
	MaxTextBytes int
	// MaxBytes bounds the WAV output read from espeak-ng; a longer output
	// kills the process and gives ErrTooLarge. 0 means
	// DefaultEspeakMaxBytes.
	MaxBytes int
}

// Espeak synthesises speech with the espeak-ng program, one process per
// Synthesize call. It is safe for concurrent use.
type Espeak struct {
	path   string
	opt    EspeakOptions
	voices []string        // language names from --voices, sorted
	known  map[string]bool // every lower-cased name -v accepts
}

// NewEspeak finds the espeak-ng program and reads its voice list (running
// `espeak-ng --voices` once, under ctx).
func NewEspeak(ctx context.Context, opt EspeakOptions) (*Espeak, error) {
	if opt.Path == "" {
		opt.Path = espeakProgram
	}
	if opt.DefaultVoice == "" {
		opt.DefaultVoice = espeakDefaultVoice
	}
	if opt.MaxTextBytes == 0 {
		opt.MaxTextBytes = DefaultEspeakMaxText
	}
	if opt.MaxBytes == 0 {
		opt.MaxBytes = DefaultEspeakMaxBytes
	}
	switch {
	case opt.Speed != 0 && (opt.Speed < 80 || opt.Speed > 450):
		return nil, fmt.Errorf("%w: espeak Speed %d, want 80..450 words per minute", ErrConfig, opt.Speed)
	case opt.MaxTextBytes < 0 || opt.MaxBytes < 0:
		return nil, fmt.Errorf("%w: espeak MaxTextBytes %d and MaxBytes %d must not be negative", ErrConfig, opt.MaxTextBytes, opt.MaxBytes)
	}
	if err := CheckVoice(opt.DefaultVoice); err != nil {
		return nil, fmt.Errorf("%w: espeak DefaultVoice: %w", ErrConfig, err)
	}
	path, err := exec.LookPath(opt.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: espeak program: %w", ErrConfig, err)
	}
	e := &Espeak{path: path, opt: opt}
	out, err := e.run(ctx, "", maxVoiceListBytes, "--voices")
	if err != nil {
		return nil, fmt.Errorf("tts: listing espeak-ng voices: %w", err)
	}
	e.voices, e.known = parseEspeakVoices(out)
	if len(e.voices) == 0 {
		return nil, fmt.Errorf("%w: espeak-ng --voices listed no usable voice", ErrEngine)
	}
	if !e.known[strings.ToLower(opt.DefaultVoice)] {
		return nil, fmt.Errorf("%w: espeak DefaultVoice %q is not installed", ErrConfig, opt.DefaultVoice)
	}
	return e, nil
}

// parseEspeakVoices reads the table `espeak-ng --voices` prints:
//
//	Pty Language       Age/Gender VoiceName          File                 Other Languages
//	 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)
//
// It returns the distinct languages (what -v takes) and every name -v
// accepts: languages, other languages and voice names. MBROLA voices (file
// mb/...) are left out: they need the mbrola program and its voice data,
// which espeak-ng does not depend on.
func parseEspeakVoices(out []byte) (voices []string, known map[string]bool) {
	known = make(map[string]bool)
	add := func(name string) bool {
		k := strings.ToLower(name)
		if CheckVoice(name) != nil || known[k] || len(known) >= maxVoices {
			return false
		}
		known[k] = true
		return true
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] == "Pty" || strings.HasPrefix(f[4], "mb/") {
			continue
		}
		if add(f[1]) {
			voices = append(voices, f[1])
		}
		add(f[3])
		// Other languages: "(en 3)(en-gb 2)", split by Fields.
		for _, p := range strings.Split(strings.Join(f[5:], " "), "(") {
			if g := strings.Fields(p); len(g) > 0 {
				add(g[0])
			}
		}
	}
	slices.Sort(voices)
	return voices, known
}

// Voices lists the installed espeak-ng languages (en-us, fr, ...), sorted.
func (e *Espeak) Voices() []string { return slices.Clone(e.voices) }

// Synthesize runs espeak-ng on text and returns its speech at 16 kHz. The
// text goes through stdin, never a shell or the command line. Cancelling
// ctx kills the process.
func (e *Espeak) Synthesize(ctx context.Context, text, voice string) (Audio, error) {
	if voice == "" || voice == DefaultVoice {
		voice = e.opt.DefaultVoice
	}
	if err := CheckVoice(voice); err != nil {
		return Audio{}, fmt.Errorf("tts: espeak: %w", err)
	}
	if !e.known[strings.ToLower(voice)] {
		return Audio{}, fmt.Errorf("%w: espeak-ng has no voice %q", ErrInvalidVoice, voice)
	}
	if len(text) > e.opt.MaxTextBytes {
		return Audio{}, fmt.Errorf("%w: %d bytes, espeak accepts at most %d", ErrInvalidText, len(text), e.opt.MaxTextBytes)
	}
	if strings.IndexByte(text, 0) >= 0 {
		return Audio{}, fmt.Errorf("%w: text holds a NUL byte", ErrInvalidText)
	}
	if strings.TrimSpace(text) == "" {
		return Audio{}, nil
	}
	if err := ctx.Err(); err != nil {
		return Audio{}, fmt.Errorf("tts: espeak not started: %w", err)
	}
	// -b 1: the input is UTF-8.
	args := []string{"-b", "1", "-v", voice, "--stdout", "--stdin"}
	if e.opt.Speed != 0 {
		args = append(args, "-s", strconv.Itoa(e.opt.Speed))
	}
	out, err := e.run(ctx, text, e.opt.MaxBytes, args...)
	if err != nil {
		return Audio{}, fmt.Errorf("tts: espeak voice %s: %w", voice, err)
	}
	a, err := decodeWAV(out, 0)
	if err != nil {
		return Audio{}, fmt.Errorf("tts: espeak voice %s output: %w", voice, err)
	}
	return a, nil
}

// run starts the program with args and stdin, and returns its stdout, which
// may be at most maxOut bytes: past that the process is killed. The error
// wraps ctx.Err() when ctx ended the process, and quotes stderr when the
// process failed.
func (e *Espeak) run(ctx context.Context, stdin string, maxOut int, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, e.path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	stderr := &boundedBuffer{max: maxStderr}
	cmd.Stderr = stderr
	cmd.WaitDelay = espeakWaitDelay
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: stdout pipe: %w", ErrEngine, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: starting %s: %w", ErrEngine, e.path, err)
	}
	out, readErr := io.ReadAll(io.LimitReader(stdout, int64(maxOut)+1))
	tooLarge := readErr == nil && len(out) > maxOut
	if tooLarge {
		// Kill before Wait: Wait would otherwise wait for the process to
		// write the rest into a pipe nobody reads.
		_ = cmd.Process.Kill()
	}
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("espeak-ng stopped: %w", ctx.Err())
	case tooLarge:
		return nil, fmt.Errorf("%w: espeak-ng wrote more than %d bytes", ErrTooLarge, maxOut)
	case waitErr != nil:
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "voice does not exist") {
			return nil, fmt.Errorf("%w: espeak-ng: %s", ErrInvalidVoice, msg)
		}
		var exitErr *exec.ExitError
		if errors.As(waitErr, &exitErr) {
			return nil, fmt.Errorf("%w: espeak-ng %s: %s", ErrEngine, exitErr.ProcessState, msg)
		}
		return nil, fmt.Errorf("%w: espeak-ng: %w (stderr: %s)", ErrEngine, waitErr, msg)
	case readErr != nil:
		return nil, fmt.Errorf("%w: reading espeak-ng output: %w", ErrEngine, readErr)
	}
	return out, nil
}
