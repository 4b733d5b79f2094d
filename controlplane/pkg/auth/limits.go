package auth

import (
	"errors"
	"fmt"
	"math"
)

// Limits bound what one API key may hold or do. A zero field means no
// limit. The control plane's defaults apply to every key (Keys.SetDefaults);
// a key's entry in the keys file may set its own.
type Limits struct {
	// MaxSessions is the most live sessions (placing, starting, ready)
	// the key may hold across the fleet (429 quota_exceeded beyond it).
	MaxSessions int
	// Rate is the key's sustained request rate per second on one replica,
	// Burst the requests it may make at once (429 rate_limited).
	Rate  float64
	Burst int
	// MaxEventStreams is the most event streams (GET /v1/events) the key
	// may hold open at once on one replica.
	MaxEventStreams int
	// MaxPendingViewers is the most WHEP viewers of one of the key's
	// sessions that have an answer but have not connected yet;
	// MaxPendingViewersPerToken the most of those per viewer token.
	MaxPendingViewers         int
	MaxPendingViewersPerToken int
}

// Defaults of the control plane's flags (the library's zero Limits mean no
// limit).
const (
	DefaultMaxSessions               = 100
	DefaultRate                      = 100
	DefaultBurst                     = 200
	DefaultMaxEventStreams           = 8
	DefaultMaxPendingViewers         = 10
	DefaultMaxPendingViewersPerToken = 5
)

// DefaultLimits are the control plane's default limits.
func DefaultLimits() Limits {
	return Limits{
		MaxSessions: DefaultMaxSessions, Rate: DefaultRate, Burst: DefaultBurst,
		MaxEventStreams: DefaultMaxEventStreams, MaxPendingViewers: DefaultMaxPendingViewers,
		MaxPendingViewersPerToken: DefaultMaxPendingViewersPerToken,
	}
}

// Validate checks that no limit is negative.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"max_sessions", float64(l.MaxSessions)}, {"rate", l.Rate}, {"burst", float64(l.Burst)},
		{"max_event_streams", float64(l.MaxEventStreams)}, {"max_pending_viewers", float64(l.MaxPendingViewers)},
		{"max_pending_viewers_per_token", float64(l.MaxPendingViewersPerToken)},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("limit %s: %v is not a count >= 0", f.name, f.v)
		}
	}
	return nil
}

// LimitOverrides are one key's limits in the keys file; a field left out
// takes the default, an explicit 0 means no limit.
type LimitOverrides struct {
	MaxSessions               *int     `json:"max_sessions,omitempty"`
	Rate                      *float64 `json:"rate,omitempty"`
	Burst                     *int     `json:"burst,omitempty"`
	MaxEventStreams           *int     `json:"max_event_streams,omitempty"`
	MaxPendingViewers         *int     `json:"max_pending_viewers,omitempty"`
	MaxPendingViewersPerToken *int     `json:"max_pending_viewers_per_token,omitempty"`
}

func (o LimitOverrides) validate() error {
	return o.over(Limits{}).Validate()
}

// over returns the defaults with o's fields in place.
func (o LimitOverrides) over(d Limits) Limits {
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set(&d.MaxSessions, o.MaxSessions)
	if o.Rate != nil {
		d.Rate = *o.Rate
	}
	set(&d.Burst, o.Burst)
	set(&d.MaxEventStreams, o.MaxEventStreams)
	set(&d.MaxPendingViewers, o.MaxPendingViewers)
	set(&d.MaxPendingViewersPerToken, o.MaxPendingViewersPerToken)
	return d
}

// SetDefaults sets the limits of every key that its entry does not set.
func (k *Keys) SetDefaults(d Limits) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("default limits: %w", err)
	}
	k.defaults = d
	return nil
}

// ErrUnknownOwner is returned for an owner no key of the set has.
var ErrUnknownOwner = errors.New("no API key with this owner")

// LimitsOf returns the limits of the key whose fingerprint is owner (for a
// request made with another credential on that key's behalf, such as a
// viewer token of one of its sessions). An owner of no key gets the
// defaults and ErrUnknownOwner.
func (k *Keys) LimitsOf(owner string) (Limits, error) {
	for i := range k.keys {
		if k.keys[i].p.Owner == owner {
			return k.keys[i].limits.over(k.defaults), nil
		}
	}
	return k.defaults, ErrUnknownOwner
}
