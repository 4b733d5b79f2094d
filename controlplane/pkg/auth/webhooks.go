package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Webhook secrets follow the Standard Webhooks format: "whsec_" and the
// base64 of 24 to 64 random bytes, the HMAC-SHA256 key.
const (
	WebhookSecretPrefix   = "whsec_"
	MinWebhookSecretBytes = 24
	MaxWebhookSecretBytes = 64
	// MaxWebhooksPerKey bounds one key's endpoints: each one is a durable
	// JetStream consumer that reads the whole events stream.
	MaxWebhooksPerKey = 10
	// maxWebhookURL bounds an endpoint URL's length.
	maxWebhookURL = 2048
	// maxSecretFile bounds a webhook secret file, which is read whole.
	maxSecretFile = 4 << 10
)

// Webhook is one endpoint a key's events are POSTed to.
type Webhook struct {
	// Owner is the fingerprint of the key (Principal.Owner).
	Owner string
	// AllEvents is set for a key with the admin scope: like its event
	// stream, its webhooks get every event (worker events too), not only
	// its own sessions'.
	AllEvents bool
	URL       string
	// Secret is the HMAC-SHA256 key (the decoded secret).
	Secret []byte
}

// webhookEntry is a webhook in the keys file.
type webhookEntry struct {
	URL string `json:"url"`
	// Secret is "whsec_<base64>"; SecretFile names a file holding one
	// (relative to the keys file's directory).
	Secret     string `json:"secret,omitempty"`
	SecretFile string `json:"secret_file,omitempty"`
}

// DecodeWebhookSecret returns the HMAC key of a webhook secret:
// "whsec_<base64>" (the prefix may be left out) of 24 to 64 bytes.
func DecodeWebhookSecret(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), WebhookSecretPrefix)
	if s == "" {
		return nil, errors.New("webhook secret: empty")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: want %q and standard base64: %w", WebhookSecretPrefix, err)
	}
	if len(b) < MinWebhookSecretBytes || len(b) > MaxWebhookSecretBytes {
		return nil, fmt.Errorf("webhook secret: %d bytes decoded, want %d to %d", len(b), MinWebhookSecretBytes, MaxWebhookSecretBytes)
	}
	return b, nil
}

// validateWebhookURL accepts an absolute http or https URL without
// credentials or fragment.
func validateWebhookURL(raw string) error {
	if raw == "" {
		return errors.New("url: empty")
	}
	if len(raw) > maxWebhookURL {
		return fmt.Errorf("url: longer than %d characters", maxWebhookURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("url %q: want an http or https URL", raw)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("url %q: no host", raw)
	case u.User != nil:
		// The signature authenticates the sender; credentials in a URL
		// would end up in logs.
		return fmt.Errorf("url of host %s: credentials in the URL are not allowed", u.Host)
	case u.Fragment != "" || strings.HasSuffix(raw, "#"):
		return fmt.Errorf("url %q: a fragment is not sent, remove it", raw)
	}
	return nil
}

// parseWebhooks validates a key's webhook entries; dir resolves relative
// secret files.
func parseWebhooks(entries []webhookEntry, dir string) ([]Webhook, error) {
	if len(entries) > MaxWebhooksPerKey {
		return nil, fmt.Errorf("webhooks: %d URLs, at most %d per key", len(entries), MaxWebhooksPerKey)
	}
	seen := make(map[string]bool, len(entries))
	out := make([]Webhook, 0, len(entries))
	for i, e := range entries {
		if err := validateWebhookURL(e.URL); err != nil {
			return nil, fmt.Errorf("webhook %d: %w", i, err)
		}
		if seen[e.URL] {
			return nil, fmt.Errorf("webhook %d: url %q listed twice", i, e.URL)
		}
		seen[e.URL] = true
		secret := e.Secret
		switch {
		case e.Secret != "" && e.SecretFile != "":
			return nil, fmt.Errorf("webhook %d (%s): secret and secret_file are exclusive", i, e.URL)
		case e.SecretFile != "":
			s, err := readSecretFile(e.SecretFile, dir)
			if err != nil {
				return nil, fmt.Errorf("webhook %d (%s): %w", i, e.URL, err)
			}
			secret = s
		case e.Secret == "":
			return nil, fmt.Errorf("webhook %d (%s): no secret (secret or secret_file)", i, e.URL)
		}
		key, err := DecodeWebhookSecret(secret)
		if err != nil {
			return nil, fmt.Errorf("webhook %d (%s): %w", i, e.URL, err)
		}
		out = append(out, Webhook{URL: e.URL, Secret: key})
	}
	return out, nil
}

func readSecretFile(path, dir string) (string, error) {
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("secret_file: %w", err)
	}
	if info.Size() > maxSecretFile {
		return "", fmt.Errorf("secret_file %s: larger than %d bytes", path, maxSecretFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secret_file: %w", err)
	}
	return string(b), nil
}

// Webhooks returns every key's webhook endpoints.
func (k *Keys) Webhooks() []Webhook {
	var out []Webhook
	for i := range k.keys {
		for _, w := range k.keys[i].webhooks {
			w.Owner = k.keys[i].p.Owner
			w.AllEvents = k.keys[i].p.Has(ScopeAdmin)
			w.Secret = append([]byte(nil), w.Secret...)
			out = append(out, w)
		}
	}
	return out
}

// AddWebhook adds an endpoint to the key apiKey, as its webhooks: entry in
// the keys file would (for keys built in code).
func (k *Keys) AddWebhook(apiKey, url, secret string) error {
	owner := Fingerprint(apiKey)
	for i := range k.keys {
		if k.keys[i].p.Owner != owner {
			continue
		}
		entries := make([]webhookEntry, 0, len(k.keys[i].webhooks)+1)
		for _, w := range k.keys[i].webhooks {
			entries = append(entries, webhookEntry{URL: w.URL, Secret: WebhookSecretPrefix + base64.StdEncoding.EncodeToString(w.Secret)})
		}
		hooks, err := parseWebhooks(append(entries, webhookEntry{URL: url, Secret: secret}), "")
		if err != nil {
			return err
		}
		k.keys[i].webhooks = hooks
		return nil
	}
	return ErrUnknownOwner
}
