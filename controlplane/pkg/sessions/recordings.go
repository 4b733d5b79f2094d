package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// ErrRecordingNotFound: the session lists no recording with that id.
var ErrRecordingNotFound = errors.New("recording not found")

// ErrRecordingBusy: the recording is still being written.
var ErrRecordingBusy = errors.New("recording still in progress")

// ErrRecordingFailed: the recording failed and has no file.
var ErrRecordingFailed = errors.New("recording failed: it has no file")

// NewRecordingID returns a fresh recording id.
func NewRecordingID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "rec_" + hex.EncodeToString(b[:])
}

// StartRecording starts a recording of a ready session on its worker and
// lists it in the session's record.
func (m *Manager) StartRecording(ctx context.Context, id string) (*fleetv1.Recording, error) {
	cl, err := m.readyClient(ctx, id)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	rec, err := cl.StartRecording(cctx, &fleetv1.RecordingRequest{SessionId: id, RecordingId: NewRecordingID()})
	if err != nil {
		return nil, grpcError("start recording", err)
	}
	if _, err := m.opts.Store.PutRecording(ctx, id, rec); err != nil {
		// Not listed, so nobody could stop it: stop it now.
		_, _ = cl.StopRecording(context.WithoutCancel(ctx), &fleetv1.RecordingRequest{SessionId: id, RecordingId: rec.GetId()})
		return nil, fmt.Errorf("start recording of %s: %w", id, err)
	}
	return rec, nil
}

// recording finds a session's recording in its record.
func (m *Manager) recording(ctx context.Context, id, rid string) (*fleetv1.Recording, error) {
	sess, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	rec, ok := fleetstore.Recording(sess, rid)
	if !ok {
		return nil, fmt.Errorf("session %s recording %s: %w", id, rid, ErrRecordingNotFound)
	}
	return rec, nil
}

// recordingWorker finds a session's recording and a client of the worker
// that wrote it.
func (m *Manager) recordingWorker(ctx context.Context, id, rid string) (*fleetv1.Recording, fleetv1.WorkerServiceClient, error) {
	rec, err := m.recording(ctx, id, rid)
	if err != nil {
		return nil, nil, err
	}
	view, ok := m.opts.Registry.Worker(rec.GetWorkerId())
	if !ok {
		return rec, nil, fmt.Errorf("recording %s: worker %s: %w", rid, rec.GetWorkerId(), ErrUnavailable)
	}
	cl, err := m.opts.Workers.Client(view.Worker.GetId(), view.Worker.GetGrpcAddress())
	return rec, cl, err
}

// recordingReader is a client of a worker that can read a finished
// recording's file: the worker that wrote it while it is registered, else
// any registered worker that advertises the shared store the file went to
// (an S3 bucket), so a recording outlives its worker.
func (m *Manager) recordingReader(rec *fleetv1.Recording) (fleetv1.WorkerServiceClient, error) {
	if view, ok := m.opts.Registry.Worker(rec.GetWorkerId()); ok {
		return m.opts.Workers.Client(view.Worker.GetId(), view.Worker.GetGrpcAddress())
	}
	if store := rec.GetStore(); store != "" {
		for _, v := range m.opts.Registry.Workers() { // sorted by id: the same reader each time
			if v.Worker.GetRecordingStore() == store && !v.Down {
				return m.opts.Workers.Client(v.Worker.GetId(), v.Worker.GetGrpcAddress())
			}
		}
		return nil, fmt.Errorf("recording %s: its worker %s is gone and no registered worker reads its store %s: %w",
			rec.GetId(), rec.GetWorkerId(), store, ErrUnavailable)
	}
	return nil, fmt.Errorf("recording %s: worker %s (the only one that can read it) is gone: %w", rec.GetId(), rec.GetWorkerId(), ErrUnavailable)
}

// StopRecording ends a recording and records its final state; stopping a
// recording that ended already answers that state.
func (m *Manager) StopRecording(ctx context.Context, id, rid string) (*fleetv1.Recording, error) {
	rec, err := m.recording(ctx, id, rid)
	if err != nil {
		return nil, err
	}
	if rec.GetState() != fleetstore.RecordingInProgress {
		return rec, nil // ended: its worker need not be there
	}
	_, cl, err := m.recordingWorker(ctx, id, rid)
	if err != nil {
		return nil, err
	}
	// Finishing the file may take a while (an upload's last part).
	cctx, cancel := context.WithTimeout(ctx, 4*m.opts.CallTimeout)
	defer cancel()
	done, err := cl.StopRecording(cctx, &fleetv1.RecordingRequest{SessionId: id, RecordingId: rid})
	if err != nil {
		return nil, grpcError("stop recording", err)
	}
	if _, err := m.opts.Store.PutRecording(ctx, id, done); err != nil {
		return nil, fmt.Errorf("stop recording %s of %s: %w", rid, id, err)
	}
	return done, nil
}

// FetchRecording streams a finished recording's file from a worker that
// can read it (recordingReader); the caller closes the reader. It also
// returns the file's size.
func (m *Manager) FetchRecording(ctx context.Context, id, rid string) (io.ReadCloser, int64, error) {
	rec, err := m.recording(ctx, id, rid)
	if err != nil {
		return nil, 0, err
	}
	if rec.GetState() == fleetstore.RecordingInProgress {
		// A session that ended finished its recordings on its worker;
		// the record learns their final state now.
		sess, err := m.Get(ctx, id)
		if err != nil {
			return nil, 0, err
		}
		if st := sess.GetState(); st != fleetv1.SessionState_SESSION_STATE_ENDED && st != fleetv1.SessionState_SESSION_STATE_FAILED {
			return nil, 0, fmt.Errorf("recording %s: %w", rid, ErrRecordingBusy)
		}
		if rec, err = m.StopRecording(ctx, id, rid); err != nil {
			return nil, 0, err
		}
		if rec.GetState() == fleetstore.RecordingInProgress {
			return nil, 0, fmt.Errorf("recording %s: %w", rid, ErrRecordingBusy)
		}
	}
	if rec.GetState() == fleetstore.RecordingFailed {
		return nil, 0, fmt.Errorf("recording %s (%s): %w", rid, rec.GetError(), ErrRecordingFailed)
	}
	cl, err := m.recordingReader(rec)
	if err != nil {
		return nil, 0, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := cl.FetchRecording(sctx, &fleetv1.RecordingRequest{SessionId: id, RecordingId: rid})
	if err != nil {
		cancel()
		return nil, 0, grpcError("fetch recording", err)
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, 0, grpcError("fetch recording", err)
	}
	return &chunkReader{stream: stream, buf: first.GetData(), cancel: cancel}, first.GetSize(), nil
}

// chunkReader reads a FetchRecording stream.
type chunkReader struct {
	stream fleetv1.WorkerService_FetchRecordingClient
	buf    []byte
	cancel context.CancelFunc
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		msg, err := c.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, grpcError("fetch recording", err)
		}
		c.buf = msg.GetData()
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *chunkReader) Close() error {
	c.cancel()
	return nil
}
