package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
)

// Headers of a delivery (Standard Webhooks).
const (
	HeaderID        = "Webhook-Id"
	HeaderTimestamp = "Webhook-Timestamp"
	HeaderSignature = "Webhook-Signature"
)

// DefaultTolerance is how far a delivery's timestamp may be from the
// receiver's clock, either way, for Verify to accept it.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrTimestamp      = errors.New("webhook: timestamp outside the tolerance")
	ErrSignature      = errors.New("webhook: no matching signature")
)

// Sign returns the webhook-signature header value of a delivery:
// "v1,<base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))>", key
// being the decoded secret.
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, timestamp, body))
}

func mac(key []byte, id string, timestamp int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(strconv.FormatInt(timestamp, 10)))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a delivery as a receiver gets it: secret is the endpoint's
// secret as in the keys file ("whsec_<base64>"), headers and body the
// request's (the body exactly as received, before any JSON parsing).
// The timestamp must be within tolerance of now (tolerance <= 0:
// DefaultTolerance), and one of the signature header's space-separated
// "v1,<base64>" entries must match. A receiver should also drop a
// webhook-id it has already processed: delivery is at least once.
func Verify(secret string, headers http.Header, body []byte, tolerance time.Duration) error {
	return verifyAt(time.Now(), secret, headers, body, tolerance)
}

func verifyAt(now time.Time, secret string, headers http.Header, body []byte, tolerance time.Duration) error {
	key, err := auth.DecodeWebhookSecret(secret)
	if err != nil {
		return err
	}
	id, ts, sigs := headers.Get(HeaderID), headers.Get(HeaderTimestamp), headers.Get(HeaderSignature)
	if id == "" || ts == "" || sigs == "" {
		return ErrMissingHeaders
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not unix seconds", ErrTimestamp, ts)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off", ErrTimestamp, d.Round(time.Second))
	}
	want := mac(key, id, sec, body)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrSignature
}
