package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/mediaruntime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/recording"
)

// recordingChunk is the size of FetchRecording's messages.
const recordingChunk = 256 << 10

// recorder is a Runtime that records sessions (mediaruntime.Runtime).
type recorder interface {
	StartRecording(ctx context.Context, id, rid string) (recording.Info, error)
	StopRecording(ctx context.Context, id, rid string) (recording.Info, error)
	OpenRecording(ctx context.Context, id, rid string) (io.ReadCloser, int64, error)
	RecordingLocation(id, rid string) string
	RecordingStore() string
}

func (s *Server) recorder(req *fleetv1.RecordingRequest) (recorder, error) {
	if err := checkSessionID(req.GetSessionId()); err != nil {
		return nil, err
	}
	if !ValidSessionID(req.GetRecordingId()) {
		return nil, status.Errorf(codes.InvalidArgument, "recording_id %q: want 1..64 characters of [a-zA-Z0-9_-]", req.GetRecordingId())
	}
	rec, ok := s.rt.(recorder)
	if !ok {
		return nil, status.Error(codes.FailedPrecondition, "this worker does not record")
	}
	return rec, nil
}

func (s *Server) recordingProto(rec recorder, req *fleetv1.RecordingRequest, in recording.Info) *fleetv1.Recording {
	out := mediaruntime.RecordingProto(req.GetRecordingId(), in, rec.RecordingLocation(req.GetSessionId(), req.GetRecordingId()))
	out.WorkerId, out.Store = s.worker, rec.RecordingStore()
	return out
}

func (s *Server) recordingStatus(err error) error {
	if errors.Is(err, mediaruntime.ErrRecordingOff) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return s.toStatus(err)
}

// StartRecording implements fleetv1.WorkerServiceServer.
func (s *Server) StartRecording(ctx context.Context, req *fleetv1.RecordingRequest) (*fleetv1.Recording, error) {
	rec, err := s.recorder(req)
	if err != nil {
		return nil, err
	}
	info, err := rec.StartRecording(ctx, req.GetSessionId(), req.GetRecordingId())
	if err != nil {
		return nil, s.recordingStatus(err)
	}
	return s.recordingProto(rec, req, info), nil
}

// StopRecording implements fleetv1.WorkerServiceServer.
func (s *Server) StopRecording(ctx context.Context, req *fleetv1.RecordingRequest) (*fleetv1.Recording, error) {
	rec, err := s.recorder(req)
	if err != nil {
		return nil, err
	}
	info, err := rec.StopRecording(ctx, req.GetSessionId(), req.GetRecordingId())
	if err != nil {
		return nil, s.recordingStatus(err)
	}
	return s.recordingProto(rec, req, info), nil
}

// FetchRecording implements fleetv1.WorkerServiceServer.
func (s *Server) FetchRecording(req *fleetv1.RecordingRequest, stream fleetv1.WorkerService_FetchRecordingServer) error {
	rec, err := s.recorder(req)
	if err != nil {
		return err
	}
	rc, size, err := rec.OpenRecording(stream.Context(), req.GetSessionId(), req.GetRecordingId())
	if err != nil {
		return s.recordingStatus(err)
	}
	defer func() { _ = rc.Close() }()
	buf := make([]byte, recordingChunk)
	first := true
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 || first {
			msg := &fleetv1.RecordingChunk{Data: buf[:n]}
			if first {
				msg.Size, first = size, false
			}
			if serr := stream.Send(msg); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return s.toStatus(fmt.Errorf("read recording %s: %w", req.GetRecordingId(), err))
		}
	}
}
