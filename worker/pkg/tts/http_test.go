package tts

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/wav"
)

// tone returns a 440 Hz tone of n samples at rate.
func tone(n, rate int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 0.5 * float32(math.Sin(2*math.Pi*440*float64(i)/float64(rate)))
	}
	return s
}

// speechServer answers POST /v1/audio/speech with handler after checking the
// request; requests it got go to got.
func speechServer(t *testing.T, handler func(w http.ResponseWriter, req speechRequest)) (*httptest.Server, chan *http.Request) {
	t.Helper()
	got := make(chan *http.Request, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		var req speechRequest
		if r.Method != http.MethodPost || r.URL.Path != "/v1/audio/speech" {
			http.Error(w, "wrong endpoint "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad json: "+err.Error(), http.StatusBadRequest)
			return
		}
		handler(w, req)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestHTTPHappyPath(t *testing.T) {
	const rate = 24000
	body := wav.Encode16(tone(rate, rate), rate) // 1 s at 24 kHz
	reqs := make(chan speechRequest, 10)
	srv, got := speechServer(t, func(w http.ResponseWriter, req speechRequest) {
		reqs <- req
		w.Header().Set("Content-Type", "audio/wav")
		_, _ = w.Write(body)
	})
	h, err := NewHTTP(HTTPOptions{BaseURL: srv.URL + "/", Model: "kokoro", APIKey: "sekret", Voice: "af_bella"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := h.Synthesize(context.Background(), "Hello world", DefaultVoice)
	if err != nil {
		t.Fatalf("Synthesize: %v", err)
	}
	if len(a.Samples) != SampleRate {
		t.Errorf("%d samples, want %d (1 s at 16 kHz)", len(a.Samples), SampleRate)
	}
	if r := rms(a.Samples[1000:15000]); math.Abs(r-0.5/math.Sqrt2) > 0.01 {
		t.Errorf("RMS %.4f, want the tone's %.4f", r, 0.5/math.Sqrt2)
	}
	r := <-got
	if auth := r.Header.Get("Authorization"); auth != "Bearer sekret" {
		t.Errorf("Authorization %q", auth)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	want := speechRequest{Model: "kokoro", Input: "Hello world", Voice: "af_bella", ResponseFormat: "wav"}
	if req := <-reqs; req != want {
		t.Errorf("request %+v, want %+v", req, want)
	}
	if v := h.Voices(); !slices.Equal(v, []string{"af_bella"}) {
		t.Errorf("Voices() = %v", v)
	}

	// A 16 kHz reply with a loose content type and no API key.
	body = wav.Encode16(tone(800, SampleRate), SampleRate)
	srv2, got2 := speechServer(t, func(w http.ResponseWriter, req speechRequest) {
		w.Header().Set("Content-Type", "audio/x-wav; charset=binary")
		_, _ = w.Write(body)
	})
	h2, err := NewHTTP(HTTPOptions{BaseURL: srv2.URL, Voices: []string{"alloy", "nova"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err = h2.Synthesize(context.Background(), "Hi", "nova")
	if err != nil || len(a.Samples) != 800 {
		t.Fatalf("%d samples, %v; want 800, nil", len(a.Samples), err)
	}
	if auth := (<-got2).Header.Get("Authorization"); auth != "" {
		t.Errorf("Authorization %q sent without a key", auth)
	}
	if _, err := h2.Synthesize(context.Background(), "Hi", "echo"); !errors.Is(err, ErrInvalidVoice) {
		t.Errorf("unconfigured voice: err = %v, want ErrInvalidVoice", err)
	}
}

// withRate rewrites the sample rate (and byte rate) of a canonical
// 44-byte-header WAV file.
func withRate(b []byte, rate uint32) []byte {
	binary.LittleEndian.PutUint32(b[24:], rate)
	binary.LittleEndian.PutUint32(b[28:], rate*2)
	return b
}

func TestHTTPErrors(t *testing.T) {
	big := wav.Encode16(tone(50000, SampleRate), SampleRate)
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, req speechRequest)
		kind    error
		contain string
	}{
		{"500", func(w http.ResponseWriter, _ speechRequest) {
			http.Error(w, `{"error":"model exploded"}`+strings.Repeat("x", 5000), http.StatusInternalServerError)
		}, ErrEngine, "HTTP 500 Internal Server Error: {\"error\":\"model exploded\"}"},
		{"json body", func(w http.ResponseWriter, _ speechRequest) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"error":"use mp3"}`)
		}, ErrBadAudio, `content type "application/json"`},
		{"not wav", func(w http.ResponseWriter, _ speechRequest) {
			w.Header().Set("Content-Type", "audio/mpeg")
			_, _ = w.Write([]byte("ID3\x03\x00\x00\x00garbage mp3 frames"))
		}, ErrBadAudio, "not a RIFF/WAVE"},
		{"oversized declared", func(w http.ResponseWriter, _ speechRequest) {
			w.Header().Set("Content-Type", "audio/wav")
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			_, _ = w.Write(big)
		}, ErrTooLarge, "declares"},
		{"oversized chunked", func(w http.ResponseWriter, _ speechRequest) {
			w.Header().Set("Content-Type", "audio/wav")
			for i := 0; i < len(big); i += 1000 {
				_, _ = w.Write(big[i:min(i+1000, len(big))])
				w.(http.Flusher).Flush() // no Content-Length
			}
		}, ErrTooLarge, "over 50000 bytes"},
		// A small reply whose header claims 1 Hz (a resampler would make
		// 16000 samples of each byte) or hours of audio is refused from
		// its header, before anything is decoded.
		{"1 Hz reply", func(w http.ResponseWriter, _ speechRequest) {
			w.Header().Set("Content-Type", "audio/wav")
			_, _ = w.Write(withRate(wav.Encode16(make([]float32, 20000), 16000), 1))
		}, ErrBadAudio, "sample rate 1 Hz"},
		{"longer than MaxDuration", func(w http.ResponseWriter, _ speechRequest) {
			w.Header().Set("Content-Type", "audio/wav")
			b := wav.Encode16(make([]float32, 8), 8000)
			b = append(b, make([]byte, 2*8000*int(MaxDuration/time.Second))...)
			binary.LittleEndian.PutUint32(b[40:], 0xFFFFFFFF) // streamed
			_, _ = w.Write(b)
		}, ErrTooLarge, "limit 5m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := speechServer(t, tt.handler)
			maxBytes := int64(50000)
			if tt.name == "longer than MaxDuration" {
				maxBytes = 0
			}
			h, err := NewHTTP(HTTPOptions{BaseURL: srv.URL, APIKey: "sekret", MaxBytes: maxBytes})
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.Synthesize(context.Background(), "Hello", "")
			if !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.contain) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.kind, tt.contain)
			}
			if strings.Contains(err.Error(), "sekret") {
				t.Fatalf("the API key leaked into the error: %v", err)
			}
			var se *StatusError
			if tt.name == "500" && (!errors.As(err, &se) || se.StatusCode != 500 || len(se.Body) > maxSnippet+len("…")) {
				t.Fatalf("StatusError %+v", se)
			}
		})
	}
}

func TestHTTPCancel(t *testing.T) {
	release := make(chan struct{})
	srv, _ := speechServer(t, func(w http.ResponseWriter, _ speechRequest) { <-release })
	defer close(release) // before srv.Close, which waits for the handler
	h, err := NewHTTP(HTTPOptions{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := h.Synthesize(ctx, "Hello", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	srv.Client().CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
}

func TestHTTPInvalid(t *testing.T) {
	for _, opt := range []HTTPOptions{
		{}, {BaseURL: "ftp://x"}, {BaseURL: "http://"}, {BaseURL: "http://x/?a=b"}, {BaseURL: "http://u:p@x"},
		{BaseURL: "http://x", Voice: "a b"}, {BaseURL: "http://x", Voices: []string{"ok", "../x"}},
		{BaseURL: "http://x", Voice: "nova", Voices: []string{"alloy"}}, {BaseURL: "http://x", MaxBytes: -1},
	} {
		if _, err := NewHTTP(opt); !errors.Is(err, ErrConfig) {
			t.Errorf("NewHTTP(%+v): err = %v, want ErrConfig", opt, err)
		}
	}
	h, err := NewHTTP(HTTPOptions{BaseURL: "http://127.0.0.1:1", MaxTextBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := h.Synthesize(ctx, "Hello", "../etc"); !errors.Is(err, ErrInvalidVoice) {
		t.Errorf("bad voice: err = %v", err)
	}
	if _, err := h.Synthesize(ctx, strings.Repeat("a", 11), ""); !errors.Is(err, ErrInvalidText) {
		t.Errorf("long text: err = %v", err)
	}
	if a, err := h.Synthesize(ctx, "  ", ""); err != nil || len(a.Samples) != 0 {
		t.Errorf("blank text: %d samples, %v", len(a.Samples), err)
	}
}
