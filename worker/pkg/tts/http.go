package tts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"
)

// HTTP engine defaults and limits.
const (
	// DefaultHTTPModel is HTTPOptions.Model when "".
	DefaultHTTPModel = "tts-1"
	// DefaultHTTPVoice is HTTPOptions.Voice when "".
	DefaultHTTPVoice = "alloy"
	// DefaultHTTPMaxBytes is HTTPOptions.MaxBytes when 0: 32 MiB, about 12
	// minutes of 16-bit 24 kHz audio.
	DefaultHTTPMaxBytes = 32 << 20
	// DefaultHTTPMaxText is HTTPOptions.MaxTextBytes when 0 (OpenAI's limit
	// is 4096 characters).
	DefaultHTTPMaxText = 4096
	speechPath         = "/v1/audio/speech"
	maxSnippet         = 512
)

// HTTPOptions configures HTTP.
type HTTPOptions struct {
	// BaseURL is the server's root, http or https, without query or
	// fragment: requests go to BaseURL + "/v1/audio/speech". Required.
	BaseURL string
	// Model is the "model" field of the request; "" means DefaultHTTPModel.
	Model string
	// APIKey is sent as "Authorization: Bearer <APIKey>"; "" sends no
	// Authorization header. It never appears in errors.
	APIKey string
	// Voice is what DefaultVoice and "" stand for; "" means
	// DefaultHTTPVoice.
	Voice string
	// Voices, when set, are the only voices Synthesize accepts (besides
	// DefaultVoice) and what Voices returns; when nil any well-formed name
	// is sent to the server and Voices returns just Voice.
	Voices []string
	// HTTPClient sends the requests; nil means http.DefaultClient. Its
	// Timeout, if any, applies on top of the Synthesize context.
	HTTPClient *http.Client
	// MaxBytes bounds the response body; a longer one gives ErrTooLarge.
	// 0 means DefaultHTTPMaxBytes.
	MaxBytes int64
	// MaxTextBytes is the longest text Synthesize sends; 0 means
	// DefaultHTTPMaxText.
	MaxTextBytes int
}

// HTTP synthesises speech with an OpenAI-compatible speech endpoint, asking
// for WAV. It is safe for concurrent use.
type HTTP struct {
	endpoint string
	opt      HTTPOptions
	client   *http.Client
}

// StatusError is returned (wrapped) when the server answers with a status
// other than 200. It unwraps to ErrEngine.
type StatusError struct {
	// StatusCode is the HTTP status code.
	StatusCode int
	// Body is the start of the response body (at most 512 bytes, control
	// characters replaced), for the log.
	Body string
}

// Error implements error.
func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: HTTP %d %s: %s", ErrEngine, e.StatusCode, http.StatusText(e.StatusCode), e.Body)
}

// Unwrap makes errors.Is(err, ErrEngine) true.
func (e *StatusError) Unwrap() error { return ErrEngine }

// NewHTTP checks opt and returns the engine. It makes no request.
func NewHTTP(opt HTTPOptions) (*HTTP, error) {
	u, err := url.Parse(opt.BaseURL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: BaseURL: %w", ErrConfig, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, fmt.Errorf("%w: BaseURL %q: want http:// or https:// and a host", ErrConfig, opt.BaseURL)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("%w: BaseURL %q: no query, fragment or user info allowed", ErrConfig, opt.BaseURL)
	}
	if opt.Model == "" {
		opt.Model = DefaultHTTPModel
	}
	if opt.Voice == "" {
		opt.Voice = DefaultHTTPVoice
	}
	if opt.MaxBytes == 0 {
		opt.MaxBytes = DefaultHTTPMaxBytes
	}
	if opt.MaxTextBytes == 0 {
		opt.MaxTextBytes = DefaultHTTPMaxText
	}
	if opt.MaxBytes < 0 || opt.MaxTextBytes < 0 {
		return nil, fmt.Errorf("%w: http MaxBytes %d and MaxTextBytes %d must not be negative", ErrConfig, opt.MaxBytes, opt.MaxTextBytes)
	}
	if err := CheckVoice(opt.Voice); err != nil {
		return nil, fmt.Errorf("%w: http Voice: %w", ErrConfig, err)
	}
	for _, v := range opt.Voices {
		if err := CheckVoice(v); err != nil {
			return nil, fmt.Errorf("%w: http Voices: %w", ErrConfig, err)
		}
	}
	if opt.Voices != nil && !slices.Contains(opt.Voices, opt.Voice) {
		return nil, fmt.Errorf("%w: http Voice %q is not among Voices", ErrConfig, opt.Voice)
	}
	opt.Voices = slices.Clone(opt.Voices)
	client := opt.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	return &HTTP{endpoint: strings.TrimRight(u.String(), "/") + speechPath, opt: opt, client: client}, nil
}

// Voices returns HTTPOptions.Voices, or just the default voice when none
// were configured.
func (h *HTTP) Voices() []string {
	if h.opt.Voices == nil {
		return []string{h.opt.Voice}
	}
	return slices.Clone(h.opt.Voices)
}

// speechRequest is the body of POST /v1/audio/speech.
type speechRequest struct {
	Model          string `json:"model"`
	Input          string `json:"input"`
	Voice          string `json:"voice"`
	ResponseFormat string `json:"response_format"`
}

// Synthesize asks the server to speak text and returns the speech at
// 16 kHz.
func (h *HTTP) Synthesize(ctx context.Context, text, voice string) (Audio, error) {
	if voice == "" || voice == DefaultVoice {
		voice = h.opt.Voice
	}
	if err := CheckVoice(voice); err != nil {
		return Audio{}, fmt.Errorf("tts: http: %w", err)
	}
	if h.opt.Voices != nil && !slices.Contains(h.opt.Voices, voice) {
		return Audio{}, fmt.Errorf("%w: %q is not a configured voice", ErrInvalidVoice, voice)
	}
	if len(text) > h.opt.MaxTextBytes {
		return Audio{}, fmt.Errorf("%w: %d bytes, the http engine sends at most %d", ErrInvalidText, len(text), h.opt.MaxTextBytes)
	}
	if strings.TrimSpace(text) == "" {
		return Audio{}, nil
	}
	body, err := json.Marshal(speechRequest{Model: h.opt.Model, Input: text, Voice: voice, ResponseFormat: "wav"})
	if err != nil {
		return Audio{}, fmt.Errorf("tts: http: encoding request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.endpoint, bytes.NewReader(body))
	if err != nil {
		return Audio{}, fmt.Errorf("%w: http request: %w", ErrConfig, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "audio/wav")
	if h.opt.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+h.opt.APIKey)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return Audio{}, fmt.Errorf("tts: http voice %s: %w", voice, err)
	}
	defer resp.Body.Close()
	b, err := h.readBody(resp)
	if err != nil {
		return Audio{}, fmt.Errorf("tts: http voice %s: %w", voice, err)
	}
	a, err := decodeWAV(b, 0)
	if err != nil {
		return Audio{}, fmt.Errorf("tts: http voice %s: response: %w (body starts %q)", voice, err, snippet(b))
	}
	return a, nil
}

// readBody checks the status and content type of resp and reads its body,
// at most MaxBytes of it.
func (h *HTTP) readBody(resp *http.Response) ([]byte, error) {
	limited := io.LimitReader(resp.Body, h.opt.MaxBytes+1)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxSnippet))
		return nil, &StatusError{StatusCode: resp.StatusCode, Body: snippet(b)}
	}
	ct := resp.Header.Get("Content-Type")
	if !audioContentType(ct) {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxSnippet))
		return nil, fmt.Errorf("%w: content type %q, want audio/wav (body starts %q)", ErrBadAudio, ct, snippet(b))
	}
	if resp.ContentLength > h.opt.MaxBytes {
		return nil, fmt.Errorf("%w: response declares %d bytes, limit %d", ErrTooLarge, resp.ContentLength, h.opt.MaxBytes)
	}
	b, err := io.ReadAll(limited)
	if err != nil {
		return nil, fmt.Errorf("%w: reading response: %w", ErrEngine, err)
	}
	if int64(len(b)) > h.opt.MaxBytes {
		return nil, fmt.Errorf("%w: response is over %d bytes", ErrTooLarge, h.opt.MaxBytes)
	}
	return b, nil
}

// audioContentType accepts any audio/* type (servers say audio/wav,
// audio/x-wav, audio/wave, audio/vnd.wave), application/octet-stream, or no
// type at all; the wav decoder has the last word.
func audioContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "audio/") || mt == "application/octet-stream"
}

// snippet makes the start of a body printable: at most maxSnippet bytes,
// valid UTF-8, control characters replaced by spaces.
func snippet(b []byte) string {
	if len(b) > maxSnippet {
		b = b[:maxSnippet+1] // truncate cuts it at a rune boundary and marks the cut
	}
	s := strings.ToValidUTF8(truncate(string(b), maxSnippet), "\uFFFD")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}
