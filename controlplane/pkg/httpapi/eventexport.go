package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// What other deliverers of events (webhooks) share with the event streams,
// so every channel sends the same JSON to the same principals.

// EventJSON is an event's JSON as GET /v1/events sends it; baseURL
// prefixes the session's whep_url ("" leaves a path).
func EventJSON(e *fleetv1.Event, baseURL string) ([]byte, error) {
	b, err := json.Marshal(toEvent(e, baseURL))
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.GetId(), err)
	}
	return b, nil
}

// EventVisible reports whether p may see e: a key with the admin scope
// sees every event, another key only its own sessions'.
func EventVisible(p auth.Principal, e *fleetv1.Event) bool {
	return p.Has(auth.ScopeAdmin) || (e.GetSession() != nil && e.GetSession().GetOwner() == p.Owner)
}

// ErrUntrustedEvent marks an event that its subject does not vouch for: it
// must be dropped, whenever it is checked again.
var ErrUntrustedEvent = errors.New("untrusted event")

// SessionReader reads a session record.
type SessionReader interface {
	Session(ctx context.Context, id string) (*fleetv1.Session, int64, error)
}

// CheckEventOrigin is the check the event streams make before serving an
// event received on subject (see checkEventOrigin). An error wrapping
// ErrUntrustedEvent is final; another one (etcd unavailable) may pass on a
// later try.
func CheckEventOrigin(ctx context.Context, store SessionReader, subject string, e *fleetv1.Event) error {
	var lookup sessionLookup
	if store != nil {
		lookup = func(ctx context.Context, id string) (*fleetv1.Session, error) {
			s, _, err := store.Session(ctx, id)
			return s, err
		}
	}
	err := checkEventOrigin(ctx, lookup, subject, e)
	if errors.Is(err, errNotHost) || errors.Is(err, fleetbus.ErrMismatch) || errors.Is(err, fleetstore.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrUntrustedEvent, err)
	}
	return err
}
