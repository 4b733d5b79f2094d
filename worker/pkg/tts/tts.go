// Package tts turns text into speech for the avatar: 16 kHz mono float32 PCM,
// the rate the mel features (worker/pkg/melspec) take.
//
// Two engines implement Engine:
//   - Espeak runs the Debian espeak-ng program as a child process (no shell),
//     one process per call, killed when the call's context ends.
//   - HTTP calls an OpenAI-compatible POST {base}/v1/audio/speech endpoint
//     and asks for WAV.
//
// Both decode the WAV they get with worker/pkg/wav and bring it to 16 kHz
// with worker/pkg/resample, in chunks; neither holds more than a bounded
// number of bytes of a reply (MaxBytes), and a reply longer than
// MaxDuration, by its header or its data, is refused before it is decoded.
//
// Splitter cuts long text into sentences (at most Splitter.MaxLen runes
// each), and Stream / Chunks synthesise them in order with a lookahead of one
// sentence, so the avatar starts speaking after the first sentence rather
// than after the whole text. Stream and Chunks start one goroutine per
// sentence, at most one at a time, and always wait for it before returning.
//
// Errors wrap one of the ErrorKind constants (errors.Is works) and carry the
// detail: the engine, the voice, the process's stderr or the HTTP status and
// a snippet of the body.
package tts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/resample"
)

// SampleRate is the rate, in Hz, of all audio the engines return.
const SampleRate = 16000

// DefaultVoice is the voice name that selects an engine's default voice.
const DefaultVoice = "default"

// maxVoiceLen is the longest voice name accepted.
const maxVoiceLen = 64

// ErrorKind classifies errors: errors.Is(err, tts.ErrInvalidVoice) reports
// whether err (detail included) is of that kind.
type ErrorKind string

// Error implements error.
func (k ErrorKind) Error() string { return string(k) }

// Error kinds returned, wrapped with detail, by the engines and Stream.
const (
	// ErrInvalidVoice: the voice name is malformed or the engine does not
	// know it.
	ErrInvalidVoice ErrorKind = "tts: invalid voice"
	// ErrInvalidText: the text is longer than the engine accepts, or holds a
	// NUL byte.
	ErrInvalidText ErrorKind = "tts: invalid text"
	// ErrTooLarge: the engine produced more audio bytes than its limit.
	ErrTooLarge ErrorKind = "tts: audio too large"
	// ErrBadAudio: the engine's output is not WAV audio the wav package
	// decodes.
	ErrBadAudio ErrorKind = "tts: bad audio"
	// ErrEngine: the engine failed (the process exited with an error, the
	// server answered with an error status, ...).
	ErrEngine ErrorKind = "tts: engine failed"
	// ErrConfig: an engine's options are invalid.
	ErrConfig ErrorKind = "tts: invalid options"
)

// Audio is synthesised speech: mono samples in −1..1 at SampleRate.
type Audio struct {
	Samples []float32
}

// Duration is the length of the audio.
func (a Audio) Duration() time.Duration {
	return time.Duration(int64(len(a.Samples)) * int64(time.Second) / SampleRate)
}

// Synthesizer turns one piece of text into speech. Implementations must
// return promptly (with an error wrapping ctx.Err()) once ctx is done.
type Synthesizer interface {
	// Synthesize speaks text with voice (DefaultVoice or "" for the
	// engine's default). Blank text gives empty Audio and no error.
	Synthesize(ctx context.Context, text, voice string) (Audio, error)
}

// Engine is a Synthesizer that can list its voices.
type Engine interface {
	Synthesizer
	// Voices lists the voice names Synthesize accepts besides DefaultVoice.
	Voices() []string
}

// CheckVoice reports whether name is a well-formed voice name:
// ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$. It says nothing about whether an engine
// has that voice.
func CheckVoice(name string) error {
	if name == "" || len(name) > maxVoiceLen {
		return fmt.Errorf("%w: %q: want 1..%d characters", ErrInvalidVoice, truncate(name, maxVoiceLen), maxVoiceLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '_' || c == '.' || c == '-') {
			continue
		}
		return fmt.Errorf("%w: %q: only letters, digits, '_', '.' and '-' (not first) are allowed", ErrInvalidVoice, name)
	}
	return nil
}

// MaxDuration is the longest audio an engine may return for one piece of
// text (Splitter's pieces are a sentence or so): a reply holding more
// gives ErrTooLarge before it is decoded. (The data size an engine
// declares is not trusted either way: espeak-ng writes a placeholder of
// about 2^31 bytes, and only the data present is decoded.)
const MaxDuration = 5 * time.Minute

// decodeWAV decodes a whole WAV reply and brings it to SampleRate, in
// chunks: it checks the header first (format, rate, and at most
// maxDuration of audio present; 0 means MaxDuration), then decodes and resamples
// a few thousand frames at a time, so it never holds more than the
// output and one chunk.
func decodeWAV(b []byte, maxDuration time.Duration) (Audio, error) {
	if maxDuration <= 0 {
		maxDuration = MaxDuration
	}
	h, err := wav.Probe(b, 0)
	if err != nil {
		return Audio{}, fmt.Errorf("%w: %w", ErrBadAudio, err)
	}
	if d := h.DurationOf(h.Present); d > maxDuration {
		return Audio{}, fmt.Errorf("%w: %v of audio, limit %v", ErrTooLarge, d.Round(time.Millisecond), maxDuration)
	}
	d, err := wav.NewDecoder(bytes.NewReader(b))
	if err != nil {
		return Audio{}, fmt.Errorf("%w: %w", ErrBadAudio, err)
	}
	maxOut := int(maxDuration / time.Millisecond * SampleRate / 1000)
	hint := resample.OutLen(h.Present, h.SampleRate, SampleRate)
	s, err := resample.ReadAll(d, h.SampleRate, SampleRate, maxOut, int(min(hint, int64(maxOut))))
	if err != nil {
		if errors.Is(err, resample.ErrTooLong) {
			return Audio{}, fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		return Audio{}, fmt.Errorf("%w: decoding %d Hz audio: %w", ErrBadAudio, h.SampleRate, err)
	}
	return Audio{Samples: s}, nil
}

// truncate returns at most n bytes of s, cut at a rune boundary, with "…"
// appended when something was dropped.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i < len(s) && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i] + "…"
}

// boundedBuffer keeps the first max bytes written to it and counts the rest;
// it never fails a write, so a process writing to it is never blocked or
// killed by it.
type boundedBuffer struct {
	buf     []byte
	max     int
	dropped int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	room := b.max - len(b.buf)
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		b.buf = append(b.buf, p[:room]...)
	}
	b.dropped += len(p) - max(room, 0)
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	if b.dropped > 0 {
		return fmt.Sprintf("%s… (%d more bytes)", b.buf, b.dropped)
	}
	return string(b.buf)
}
