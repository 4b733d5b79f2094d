package sessions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// createIdempotent binds the key to a new session id in etcd; whoever binds
// it places the session, and every other request with the key waits for
// that session and returns it. If the placement fails, the binding is
// released (and its lease revoked) so a later retry can try again.
func (m *Manager) createIdempotent(ctx context.Context, p CreateParams) (*fleetv1.Session, error) {
	keyDigest := sha256.Sum256([]byte(p.IdempotencyKey))
	key := hex.EncodeToString(keyDigest[:16])
	for {
		id := NewSessionID()
		bound, claimed, err := m.opts.Store.ClaimIdempotencyKey(ctx, p.Owner, key, id+"|"+p.RequestHash, m.opts.IdempotencyTTL)
		if err != nil {
			return nil, err
		}
		if claimed {
			sess, err := m.place(ctx, m.newSession(id, p), p.MaxSessions)
			if err != nil {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.CallTimeout)
				defer cancel()
				if rerr := m.opts.Store.ReleaseIdempotencyKey(rctx, p.Owner, key, bound); rerr != nil {
					m.log.Warn("release idempotency key", "err", rerr)
				}
				return nil, err
			}
			return sess, nil
		}
		boundID, boundHash, _ := strings.Cut(bound, "|")
		if boundHash != p.RequestHash {
			return nil, ErrIdempotencyConflict
		}
		sess, err := m.awaitPlaced(ctx, boundID, p.Owner, key, bound)
		if errors.Is(err, errReleased) {
			continue // the first attempt failed and let go of the key: try ourselves
		}
		return sess, err
	}
}

var errReleased = errors.New("idempotency key released")

// awaitPlaced waits until the session another request is placing has left
// the starting state, or that request gave up (the key is unbound).
func (m *Manager) awaitPlaced(ctx context.Context, id, owner, key, bound string) (*fleetv1.Session, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		sess, _, err := m.opts.Store.Session(ctx, id)
		switch {
		case err == nil && sess.GetState() != fleetv1.SessionState_SESSION_STATE_STARTING &&
			sess.GetState() != fleetv1.SessionState_SESSION_STATE_PLACING,
			err == nil && sess.GetLostAt() != nil: // placed once, now being re-placed
			return sess, nil
		case err != nil && !errors.Is(err, fleetstore.ErrNotFound):
			return nil, err
		}
		// Not there yet, or still starting: is the placing request alive?
		cur, cerr := m.opts.Store.IdempotencyBinding(ctx, owner, key)
		if cerr != nil && !errors.Is(cerr, fleetstore.ErrNotFound) {
			return nil, cerr
		}
		if cur != bound {
			// The first request released the key, or a new one bound it.
			return nil, errReleased
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for session %s: %w", id, ctx.Err())
		case <-tick.C:
		}
	}
}
