package sessions

import (
	"context"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// The small interfaces placement and re-placement need. Production passes
// *fleetstore.Store, *registry.Registry and *workerclient.Pool (Options);
// unit tests pass in-memory fakes (newManager).

// placementStore is the part of the store that places, moves and ends
// sessions.
type placementStore interface {
	Reserve(ctx context.Context, r fleetstore.Reservation, sess *fleetv1.Session) (int64, bool, error)
	Unreserve(ctx context.Context, sess *fleetv1.Session, rev int64) error
	ReserveMove(ctx context.Context, r fleetstore.Reservation, sess *fleetv1.Session, rev int64, release ...*fleetv1.SlotRef) (int64, bool, error)
	Unplace(ctx context.Context, sess *fleetv1.Session, rev int64, release ...*fleetv1.SlotRef) (int64, error)
	EndSessionAt(ctx context.Context, sess *fleetv1.Session, rev int64, state fleetv1.SessionState, reason fleetv1.EndReason, message string) (*fleetv1.Session, error)
	EndSession(ctx context.Context, id string, state fleetv1.SessionState, reason fleetv1.EndReason, message string) (*fleetv1.Session, bool, error)
	UpdateSession(ctx context.Context, sess *fleetv1.Session, rev int64) (int64, error)
	Session(ctx context.Context, id string) (*fleetv1.Session, int64, error)
}

// fleetView is the part of the registry placement ranks candidates from.
type fleetView interface {
	Workers() []registry.WorkerView
	Worker(id string) (registry.WorkerView, bool)
	FreeSlot(worker string, gpu uint32, slots int, start int, skip func(slot uint32) bool) (uint32, bool)
	NoteReserved(worker string, ref registry.SlotRef, sessionID string)
	NoteReleased(worker string, ref registry.SlotRef, sessionID string)
	ConfirmSlots(ctx context.Context) (fresh bool, err error)
}

// workerClients dials workers by id and address.
type workerClients interface {
	Client(id, addr string) (fleetv1.WorkerServiceClient, error)
}

// readyWriter commits the ready record of a started session, guarded by its
// revision (the batch writer in production).
type readyWriter interface {
	Write(ctx context.Context, sess *fleetv1.Session, rev int64) error
	// Mark queues the change without waiting; Await waits for a queued
	// one to settle and reports whether one was pending.
	Mark(sess *fleetv1.Session, rev int64)
	Await(ctx context.Context, id string) bool
}

// deps are what placement talks to.
type deps struct {
	store   placementStore
	fleet   fleetView
	workers workerClients
	writer  readyWriter
}
