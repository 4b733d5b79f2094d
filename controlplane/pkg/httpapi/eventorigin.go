package httpapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// originLookupTimeout bounds the read of a session record that vouches for
// a worker's event.
const originLookupTimeout = 2 * time.Second

// errNotHost is why a worker's event about a session it does not host is
// dropped.
var errNotHost = errors.New("session not hosted by the publishing worker")

// sessionLookup reads a session record.
type sessionLookup func(ctx context.Context, id string) (*fleetv1.Session, error)

// checkEventOrigin is the control plane's defence in depth behind the NATS
// permissions: an event must say only what its subject allows
// (fleetbus.CheckEvent), and an event a worker published about a session
// is served only if the session's record in etcd names that worker as its
// host and the event's copy of the record names the same owner, so a
// worker can speak neither for another worker's session nor into another
// owner's stream.
func checkEventOrigin(ctx context.Context, lookup sessionLookup, subject string, e *fleetv1.Event) error {
	origin, err := fleetbus.CheckEvent(subject, e)
	if err != nil {
		return err
	}
	if !origin.FromWorker {
		return nil
	}
	if lookup == nil {
		return fmt.Errorf("%w: no session records to check against", errNotHost)
	}
	ctx, cancel := context.WithTimeout(ctx, originLookupTimeout)
	defer cancel()
	rec, err := lookup(ctx, e.GetSessionId())
	if err != nil {
		return fmt.Errorf("check host of session %s: %w", e.GetSessionId(), err)
	}
	if rec.GetWorkerId() != origin.Worker {
		return fmt.Errorf("%w: session %s is on worker %q, event from %q", errNotHost, e.GetSessionId(), rec.GetWorkerId(), origin.Worker)
	}
	if s := e.GetSession(); s != nil && s.GetOwner() != rec.GetOwner() {
		return fmt.Errorf("%w: event names another owner of session %s", errNotHost, e.GetSessionId())
	}
	return nil
}

// sessionRecords is the lookup of the API's store (nil without one).
func (a *API) sessionRecords() sessionLookup {
	if a.opts.Store == nil {
		return nil
	}
	return func(ctx context.Context, id string) (*fleetv1.Session, error) {
		s, _, err := a.opts.Store.Session(ctx, id)
		return s, err
	}
}
