package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// Get reads a session record. A create answers 201 (ready) once its worker
// runs the session and writes the ready mark after, group-committed; so a
// record still starting from a create (not a re-placement) is read again
// until the mark lands — on this replica by waiting for its own queued mark,
// on another by polling — for at most ReadySettle. A read after a 201 thus
// shows ready (or a later state), never starting, unless the creating
// replica died before its mark: then starting until the reaper recovers it.
// ReadySettle bounds the wait on this replica's own queue too: a mark
// whose commit etcd is slow to answer (each try may take the group
// commit's timeout) must not hold a read for longer.
func (m *Manager) Get(ctx context.Context, id string) (*fleetv1.Session, error) {
	sess, err := m.read(ctx, id)
	if err != nil || !awaitingMark(sess) {
		return sess, err
	}
	sctx, cancel := context.WithTimeout(ctx, m.opts.ReadySettle)
	defer cancel()
	if m.d.writer.Await(sctx, id) {
		return m.read(ctx, id)
	}
	for wait := time.Millisecond; awaitingMark(sess); wait = min(2*wait, 20*time.Millisecond) {
		select {
		case <-sctx.Done():
			return sess, nil
		case <-time.After(wait):
		}
		if sess, err = m.read(ctx, id); err != nil {
			return nil, err
		}
	}
	return sess, nil
}

func (m *Manager) read(ctx context.Context, id string) (*fleetv1.Session, error) {
	sess, _, err := m.opts.Store.Session(ctx, id)
	if errors.Is(err, fleetstore.ErrNotFound) {
		return nil, ErrNotFound
	}
	return sess, err
}

// awaitingMark says whether a record is a create's, started or starting,
// whose ready mark has not landed.
func awaitingMark(sess *fleetv1.Session) bool {
	return sess.GetState() == fleetv1.SessionState_SESSION_STATE_STARTING && sess.GetLostAt() == nil
}

// List reads every session record.
func (m *Manager) List(ctx context.Context) ([]*fleetv1.Session, error) {
	entries, err := m.opts.Store.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*fleetv1.Session, len(entries))
	for i, e := range entries {
		out[i] = e.Session
	}
	return out, nil
}

// Page is one page of a session listing, in session id order.
type Page struct {
	Sessions []*fleetv1.Session
	// Last is the id to list after for the next page; More says whether
	// any may follow.
	Last string
	More bool
}

// ListPage reads up to limit sessions whose ids sort after after: the
// owner's, from its index in etcd, or with owner "" every session of the
// fleet (a paginated range read, for admins).
func (m *Manager) ListPage(ctx context.Context, owner, after string, limit int) (Page, error) {
	var (
		p   fleetstore.SessionPage
		err error
	)
	if owner == "" {
		p, err = m.opts.Store.SessionsPage(ctx, after, limit)
	} else {
		p, err = m.opts.Store.OwnerSessionsPage(ctx, owner, after, limit)
	}
	if err != nil {
		return Page{}, err
	}
	out := Page{Last: p.Last, More: p.More, Sessions: make([]*fleetv1.Session, len(p.Sessions))}
	for i, e := range p.Sessions {
		out.Sessions[i] = e.Session
	}
	return out, nil
}

// Delete ends a session with reason deleted and frees its slot. Deleting a
// session that already ended is not an error.
func (m *Manager) Delete(ctx context.Context, id string) (*fleetv1.Session, error) {
	sess, ended, err := m.d.store.EndSession(ctx, id, fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, "deleted through the API")
	if errors.Is(err, fleetstore.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if ended {
		m.d.fleet.NoteReleased(sess.GetWorkerId(), registry.SlotRef{GPU: sess.GetGpu(), Slot: sess.GetSlot()}, sess.GetId())
		m.opts.Metrics.ended.WithLabelValues("deleted").Inc()
		// session.ended is derived from the record by the event outbox.
		// The worker also sees its slot key go and stops the session; this
		// call only makes that immediate.
		m.stopOnWorker(ctx, sess)
	}
	return sess, nil
}

func (m *Manager) stopOnWorker(ctx context.Context, sess *fleetv1.Session) {
	view, ok := m.d.fleet.Worker(sess.GetWorkerId())
	if !ok {
		return
	}
	cl, err := m.d.workers.Client(view.Worker.GetId(), view.Worker.GetGrpcAddress())
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.CallTimeout)
	defer cancel()
	if _, err := cl.StopSession(cctx, &fleetv1.StopSessionRequest{SessionId: sess.GetId(), Reason: sess.GetEndReason()}); err != nil {
		m.log.Info("stop session on worker", "session", sess.GetId(), "worker", sess.GetWorkerId(), "err", err)
	}
}

// readyClient returns the worker client of a ready session.
func (m *Manager) readyClient(ctx context.Context, id string) (fleetv1.WorkerServiceClient, error) {
	_, cl, err := m.readySession(ctx, id)
	return cl, err
}

// readySession is readyClient that also returns the record it read.
func (m *Manager) readySession(ctx context.Context, id string) (*fleetv1.Session, fleetv1.WorkerServiceClient, error) {
	sess, err := m.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if sess.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
		return nil, nil, fmt.Errorf("session %s is %s: %w", id, sess.GetState(), ErrNotReady)
	}
	cl, err := m.workerClient(sess)
	return sess, cl, err
}

// workerClient is a client of the worker the record names.
func (m *Manager) workerClient(sess *fleetv1.Session) (fleetv1.WorkerServiceClient, error) {
	view, ok := m.opts.Registry.Worker(sess.GetWorkerId())
	if !ok {
		return nil, fmt.Errorf("session %s: worker %s: %w", sess.GetId(), sess.GetWorkerId(), ErrUnavailable)
	}
	return m.opts.Workers.Client(view.Worker.GetId(), view.Worker.GetGrpcAddress())
}

// PushAudio sends a WAV file to the session's worker.
func (m *Manager) PushAudio(ctx context.Context, id string, wav []byte) error {
	cl, err := m.readyClient(ctx, id)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	if _, err := cl.PushAudio(cctx, &fleetv1.PushAudioRequest{SessionId: id, Wav: wav}); err != nil {
		return grpcError("push audio", err)
	}
	return nil
}
