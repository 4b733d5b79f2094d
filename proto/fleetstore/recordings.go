package fleetstore

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// MaxRecordings bounds the recordings a session record lists.
const MaxRecordings = 64

// Recording states as the record lists them (the worker's recording.State).
const (
	RecordingInProgress = "recording"
	RecordingStopped    = "stopped"
	RecordingFailed     = "failed"
)

// failRecordingsOf marks the recordings worker was still writing for sess
// failed: a lost worker never finishes them (an S3 upload it had not
// completed never appears), and nobody else could stop them.
func failRecordingsOf(sess *fleetv1.Session, worker string) {
	for _, r := range sess.GetRecordings() {
		if r.GetState() == RecordingInProgress && r.GetWorkerId() == worker {
			r.State, r.Error, r.StoppedAt = RecordingFailed, "its worker "+worker+" was lost before it finished", timestamppb.Now()
		}
	}
}

// ErrTooManyRecordings: the session lists MaxRecordings already.
var ErrTooManyRecordings = errors.New("fleetstore: too many recordings for one session")

// PutRecording adds rec to a session's record, or replaces the entry with
// rec's id, with a compare-and-swap on the record's revision (retried
// while other writers move it on). It returns the record written.
func (s *Store) PutRecording(ctx context.Context, sessionID string, rec *fleetv1.Recording) (*fleetv1.Session, error) {
	for {
		sess, rev, err := s.Session(ctx, sessionID)
		if err != nil {
			return nil, fmt.Errorf("put recording %s: %w", rec.GetId(), err)
		}
		next := proto.Clone(sess).(*fleetv1.Session)
		found := false
		for i, r := range next.GetRecordings() {
			if r.GetId() == rec.GetId() {
				next.Recordings[i], found = rec, true
			}
		}
		if !found {
			if len(next.GetRecordings()) >= MaxRecordings {
				return nil, fmt.Errorf("put recording %s of %s: %w", rec.GetId(), sessionID, ErrTooManyRecordings)
			}
			next.Recordings = append(next.Recordings, rec)
		}
		_, err = s.UpdateSession(ctx, next, rev)
		if errors.Is(err, ErrConflict) {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("put recording %s: %w", rec.GetId(), ctx.Err())
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("put recording %s: %w", rec.GetId(), err)
		}
		return next, nil
	}
}

// Recording finds a recording in a session's record.
func Recording(sess *fleetv1.Session, id string) (*fleetv1.Recording, bool) {
	for _, r := range sess.GetRecordings() {
		if r.GetId() == id {
			return r, true
		}
	}
	return nil, false
}
