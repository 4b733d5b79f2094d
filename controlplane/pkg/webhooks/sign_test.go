package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func TestVerify(t *testing.T) {
	sec, key := secret(9)
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"id":"evt_1","type":"session.ready"}`)
	signed := func(id string, ts int64, b []byte, sig string) http.Header {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		if sig == "" {
			sig = Sign(key, id, ts, b)
		}
		h.Set(HeaderSignature, sig)
		return h
	}
	ts := now.Unix()
	otherSecret, otherKey := secret(8)
	tests := []struct {
		name   string
		secret string
		h      http.Header
		body   []byte
		want   error
	}{
		{"valid", sec, signed("evt_1", ts, body, ""), body, nil},
		{"valid, secret without prefix", sec[len("whsec_"):], signed("evt_1", ts, body, ""), body, nil},
		{"4 minutes old", sec, signed("evt_1", ts-240, body, ""), body, nil},
		{"tampered body", sec, signed("evt_1", ts, body, ""), []byte(`{"id":"evt_1","type":"session.ended"}`), ErrSignature},
		{"tampered id", sec, func() http.Header { h := signed("evt_1", ts, body, ""); h.Set(HeaderID, "evt_2"); return h }(), body, ErrSignature},
		{"tampered timestamp", sec, func() http.Header {
			h := signed("evt_1", ts, body, "")
			h.Set(HeaderTimestamp, strconv.FormatInt(ts-1, 10))
			return h
		}(), body, ErrSignature},
		{"too old", sec, signed("evt_1", ts-400, body, ""), body, ErrTimestamp},
		{"from the future", sec, signed("evt_1", ts+400, body, ""), body, ErrTimestamp},
		{"timestamp not a number", sec, func() http.Header { h := signed("evt_1", ts, body, ""); h.Set(HeaderTimestamp, "soon"); return h }(), body, ErrTimestamp},
		{"missing signature", sec, func() http.Header { h := signed("evt_1", ts, body, ""); h.Del(HeaderSignature); return h }(), body, ErrMissingHeaders},
		{"wrong secret", otherSecret, signed("evt_1", ts, body, ""), body, ErrSignature},
		{"rotation: one of two signatures", sec, signed("evt_1", ts, body, Sign(otherKey, "evt_1", ts, body)+" "+Sign(key, "evt_1", ts, body)), body, nil},
		{"other versions ignored", sec, signed("evt_1", ts, body, "v2,"+Sign(key, "evt_1", ts, body)[3:]), body, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyAt(now, tt.secret, tt.h, tt.body, 0)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("verify: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestSignIsTheDocumentedAlgorithm recomputes a signature the way the
// README tells a receiver in any language to.
func TestSignIsTheDocumentedAlgorithm(t *testing.T) {
	sec, _ := secret(3)
	key, err := base64.StdEncoding.DecodeString(sec[len("whsec_"):])
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("evt_42.1700000000.{}"))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if got := Sign(key, "evt_42", 1_700_000_000, []byte("{}")); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestRetryDelay(t *testing.T) {
	p := Retry{MaxAttempts: 10, Initial: time.Second, Max: time.Minute}
	for n, base := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 6: 32 * time.Second, 7: time.Minute, 100: time.Minute} {
		for range 50 {
			if d := p.delay(n); d < base/2 || d > base {
				t.Fatalf("delay(%d) = %s, want within [%s, %s]", n, d, base/2, base)
			}
		}
	}
	if d := (Retry{Initial: 0, Max: 0}).delay(3); d != 0 {
		t.Errorf("zero policy: delay %s", d)
	}
}

func TestNewChecksOptions(t *testing.T) {
	js := jetstreamStub{}
	_, key := secret(1)
	ep := Endpoint{Owner: "o", URL: "https://h.example/", Secret: key}
	enc := func(*fleetv1.Event) ([]byte, error) { return nil, nil }
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"defaults", Options{JetStream: js, Encode: enc, Endpoints: []Endpoint{ep}}, true},
		{"no jetstream", Options{Encode: enc}, false},
		{"no encoder", Options{JetStream: js}, false},
		{"no attempts", Options{JetStream: js, Encode: enc, Retry: Retry{MaxAttempts: -1}}, false},
		{"max below initial", Options{JetStream: js, Encode: enc, Retry: Retry{Initial: time.Minute, Max: time.Second}}, false},
		{"ack wait within the timeout", Options{JetStream: js, Encode: enc, Timeout: time.Minute, AckWait: time.Second}, false},
		{"endpoint without secret", Options{JetStream: js, Encode: enc, Endpoints: []Endpoint{{Owner: "o", URL: "https://h.example/"}}}, false},
		{"endpoint twice", Options{JetStream: js, Encode: enc, Endpoints: []Endpoint{ep, ep}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (r.opts.Retry != Retry{MaxAttempts: DefaultMaxAttempts, Initial: DefaultInitialDelay, Max: DefaultMaxDelay} || r.opts.AckWait != DefaultTimeout+30*time.Second) {
				t.Errorf("defaults %+v, ack wait %s", r.opts.Retry, r.opts.AckWait)
			}
		})
	}
}

// jetstreamStub is a non-nil JetStream for option checks that never use it.
type jetstreamStub struct{ jetstream.JetStream }
