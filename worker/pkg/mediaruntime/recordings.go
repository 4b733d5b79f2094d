package mediaruntime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/recording"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// Recording limits of the runtime.
const (
	// MaxRecordingsPerSession bounds the recordings a session runs at once.
	MaxRecordingsPerSession = 4
	// keepRecordings bounds the ended recordings the runtime remembers (for
	// StopRecording's answer after the session ended).
	keepRecordings = 1024
	// recordingStopTimeout bounds the finishing of a session's recordings
	// when the session ends.
	recordingStopTimeout = time.Minute
	// recEndedBuffer is how many ended recordings wait for the worker.
	recEndedBuffer = 256
)

// ErrRecordingOff: the worker has no recording store (Config.Recordings).
var ErrRecordingOff = errors.New("recording is not configured on this worker")

var recordingID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

// RecordingName is the object name of a session's recording in the store.
func RecordingName(sessionID, recordingID string) string {
	return sessionID + "/" + recordingID + ".webm"
}

// recordings are the runtime's recorders by object name; ended ones are
// kept (up to keepRecordings) for their final Info.
type recordings struct {
	byName map[string]*recording.Recorder
	order  []string
}

// StartRecording starts recording session id as recording rid (package
// recording): a WebM file of what the session's viewers see, from its next
// keyframe. Starting a recording that exists returns its Info.
func (r *Runtime) StartRecording(ctx context.Context, id, rid string) (recording.Info, error) {
	if r.cfg.Recordings == nil {
		return recording.Info{}, fmt.Errorf("record %s: %w", id, ErrRecordingOff)
	}
	if !recordingID.MatchString(rid) {
		return recording.Info{}, fmt.Errorf("record %s: recording id %q: %w", id, rid, runtime.ErrInvalidInput)
	}
	s, err := r.get(id)
	if err != nil {
		return recording.Info{}, err
	}
	name := RecordingName(id, rid)
	s.mu.Lock()
	defer s.mu.Unlock()
	r.recMu.Lock()
	rec := r.recorder(name)
	r.recMu.Unlock()
	if rec != nil {
		return rec.Info(), nil
	}
	if len(s.recs) >= MaxRecordingsPerSession {
		return recording.Info{}, fmt.Errorf("record %s: %d recordings running already: %w", id, len(s.recs), runtime.ErrSlotBusy)
	}
	p := s.p()
	rec, err = recording.Start(ctx, recording.Options{Store: r.cfg.Recordings, Name: name, RequestKeyframe: p.RequestKeyframe,
		MaxBytes: r.cfg.RecordingMaxBytes, MaxDuration: r.cfg.RecordingMaxDuration, Logger: r.log.With("session", id),
		OnDone: func(in recording.Info) { r.reportRecording(id, rid, in) }})
	if err != nil {
		return recording.Info{}, fmt.Errorf("record %s: %w", id, err)
	}
	s.recs = append(s.recs, rec)
	s.tee.Add(rec)
	r.keepRecorder(name, rec)
	r.log.Info("recording started", "session", id, "recording", rid, "store", r.cfg.Recordings.String())
	return rec.Info(), nil
}

// StopRecording ends a recording and waits (until ctx ends) for its file to
// be complete in the store; a recording that ended already (its session
// ended, or a limit) answers its final Info.
func (r *Runtime) StopRecording(ctx context.Context, id, rid string) (recording.Info, error) {
	name := RecordingName(id, rid)
	r.recMu.Lock()
	rec := r.recorder(name)
	r.recMu.Unlock()
	if rec == nil {
		return recording.Info{}, fmt.Errorf("recording %s of %s: %w", rid, id, runtime.ErrNotFound)
	}
	if s, err := r.get(id); err == nil {
		s.mu.Lock()
		s.detach(rec)
		s.mu.Unlock()
	}
	info, err := rec.Stop(ctx)
	if err != nil && info.State != recording.Failed {
		return info, err // ctx ended: still finishing
	}
	return info, nil
}

// OpenRecording reads a finished recording from the store, whether or not
// its session still runs.
func (r *Runtime) OpenRecording(ctx context.Context, id, rid string) (io.ReadCloser, int64, error) {
	if r.cfg.Recordings == nil {
		return nil, 0, fmt.Errorf("recording %s of %s: %w", rid, id, ErrRecordingOff)
	}
	if !recordingID.MatchString(rid) {
		return nil, 0, fmt.Errorf("recording id %q: %w", rid, runtime.ErrInvalidInput)
	}
	rc, n, err := r.cfg.Recordings.Open(ctx, RecordingName(id, rid))
	if errors.Is(err, recording.ErrNotFound) {
		return nil, 0, fmt.Errorf("recording %s of %s: %w", rid, id, runtime.ErrNotFound)
	}
	return rc, n, err
}

// RecordingLocation says where a recording is kept.
func (r *Runtime) RecordingLocation(id, rid string) string {
	if r.cfg.Recordings == nil {
		return ""
	}
	return r.cfg.Recordings.String() + "/" + RecordingName(id, rid)
}

// RecordingStore is the shared store recordings go to ("" when it is this
// worker's own, or recording is off): recording.Store.Shared.
func (r *Runtime) RecordingStore() string {
	if r.cfg.Recordings == nil {
		return ""
	}
	return r.cfg.Recordings.Shared()
}

// RecordingsEnded implements runtime.RecordingReporter.
func (r *Runtime) RecordingsEnded() <-chan runtime.RecordingEnded { return r.recEnded }

// reportRecording hands an ended recording to RecordingsEnded without
// blocking.
func (r *Runtime) reportRecording(id, rid string, in recording.Info) {
	e := runtime.RecordingEnded{SessionID: id, Recording: RecordingProto(rid, in, r.RecordingLocation(id, rid))}
	e.Recording.Store = r.RecordingStore()
	r.recEndMu.Lock()
	defer r.recEndMu.Unlock()
	if r.recEndClosed {
		return
	}
	select {
	case r.recEnded <- e:
	default:
		r.log.Warn("ended recording not reported: the queue is full", "session", id, "recording", rid)
	}
}

// RecordingProto is a recording's state as the fleet keeps it (WorkerId
// unset).
func RecordingProto(rid string, in recording.Info, location string) *fleetv1.Recording {
	out := &fleetv1.Recording{Id: rid, State: string(in.State), StartedAt: timestamppb.New(in.Started),
		Bytes: in.Bytes, Duration: durationpb.New(in.Duration), Location: location, Error: in.Error}
	if !in.Stopped.IsZero() {
		out.StoppedAt = timestamppb.New(in.Stopped)
	}
	return out
}

// recorder looks a recorder up; the caller holds recMu.
func (r *Runtime) recorder(name string) *recording.Recorder {
	if r.recs.byName == nil {
		return nil
	}
	return r.recs.byName[name]
}

func (r *Runtime) keepRecorder(name string, rec *recording.Recorder) {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	if r.recs.byName == nil {
		r.recs.byName = map[string]*recording.Recorder{}
	}
	r.recs.byName[name] = rec
	r.recs.order = append(r.recs.order, name)
	for n := len(r.recs.order); n > 0 && len(r.recs.order) > keepRecordings; n-- {
		old := r.recs.order[0]
		r.recs.order = r.recs.order[1:]
		if o := r.recs.byName[old]; o != nil {
			select {
			case <-o.Done():
				delete(r.recs.byName, old)
			default: // still running: keep
				r.recs.order = append(r.recs.order, old)
			}
		}
	}
}

// detach takes rec off the session's tee; the caller holds s.mu.
func (s *session) detach(rec *recording.Recorder) {
	s.tee.Remove(rec)
	for i, x := range s.recs {
		if x == rec {
			s.recs = append(s.recs[:i], s.recs[i+1:]...)
			break
		}
	}
}

// stopRecordings finishes a session's recordings when it ends.
func (r *Runtime) stopRecordings(s *session) {
	s.mu.Lock()
	recs := s.recs
	s.recs = nil
	s.mu.Unlock()
	for _, rec := range recs {
		s.tee.Remove(rec)
		ctx, cancel := context.WithTimeout(context.Background(), recordingStopTimeout)
		if info, err := rec.Stop(ctx); err != nil {
			r.log.Warn("recording failed at the session's end", "session", s.sess.GetId(), "recording", info.Name, "err", err)
		}
		cancel()
	}
}
