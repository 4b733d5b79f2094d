// Package livekitroom checks where a session joins a LiveKit room as a
// voice agent's avatar (Session.livekit): the server URL and the access
// token the agent minted. The control plane checks a create's request with
// it and the worker checks the record again before it connects.
package livekitroom

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Limits.
const (
	// MaxURL bounds the server URL, in bytes.
	MaxURL = 2048
	// MaxToken bounds the access token, in bytes.
	MaxToken = 4096
)

// ErrInvalid is wrapped by every error of Validate.
var ErrInvalid = errors.New("invalid livekit room")

// Validate checks a LiveKit server URL (ws, wss, http or https, with a
// host, no user info or fragment) and an access token (a JWT: three
// base64url parts, the first a JSON header naming its alg). It never puts
// the token in its errors.
func Validate(rawURL, token string) error {
	if err := validateURL(rawURL); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if err := validateToken(token); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	return nil
}

func validateURL(raw string) error {
	switch {
	case raw == "":
		return fmt.Errorf("%w: required", ErrInvalid)
	case len(raw) > MaxURL:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxURL)
	case !utf8.ValidString(raw) || strings.ContainsAny(raw, " \t\r\n"):
		return fmt.Errorf("%w: not a URL", ErrInvalid)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: not a URL", ErrInvalid)
	}
	switch strings.ToLower(u.Scheme) {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("%w: scheme must be ws, wss, http or https", ErrInvalid)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%w: no host", ErrInvalid)
	}
	if u.User != nil {
		return fmt.Errorf("%w: user info is not allowed", ErrInvalid)
	}
	if u.Fragment != "" || u.RawQuery != "" {
		return fmt.Errorf("%w: query and fragment are not allowed", ErrInvalid)
	}
	return nil
}

func validateToken(tok string) error {
	switch {
	case tok == "":
		return fmt.Errorf("%w: required", ErrInvalid)
	case len(tok) > MaxToken:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxToken)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("%w: not a JWT (three dot-separated parts)", ErrInvalid)
	}
	for i, p := range parts {
		if p == "" && i < 2 {
			return fmt.Errorf("%w: not a JWT (empty part)", ErrInvalid)
		}
		if _, err := base64.RawURLEncoding.DecodeString(p); err != nil {
			return fmt.Errorf("%w: not a JWT (part %d is not base64url)", ErrInvalid, i+1)
		}
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hdr, &h); err != nil || h.Alg == "" {
		return fmt.Errorf("%w: not a JWT (no alg in its header)", ErrInvalid)
	}
	return nil
}
