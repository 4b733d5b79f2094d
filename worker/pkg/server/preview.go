package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// MaxPreviewBytes bounds an avatar preview the server sends.
const MaxPreviewBytes = 64 << 10

// Preview is an encoded still of one avatar (avatar.Pack.Preview).
type Preview struct {
	Image         []byte
	ContentType   string
	Width, Height int
}

// Previews finds the preview of an avatar the worker serves; ok is false
// for an avatar it does not have.
type Previews func(avatar string) (p Preview, ok bool)

// AvatarPreview implements fleetv1.WorkerServiceServer.
func (s *Server) AvatarPreview(_ context.Context, req *fleetv1.AvatarPreviewRequest) (*fleetv1.AvatarPreviewResponse, error) {
	name := req.GetAvatar()
	if !fleetstore.ValidName(name) {
		return nil, status.Errorf(codes.InvalidArgument, "avatar %q: want 1..64 characters of [a-zA-Z0-9_.-], starting with a letter or digit", name)
	}
	if s.previews == nil {
		return nil, status.Errorf(codes.NotFound, "avatar %q: this worker has no previews", name)
	}
	p, ok := s.previews(name)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "avatar %q: not served by worker %s", name, s.worker)
	}
	if len(p.Image) == 0 || len(p.Image) > MaxPreviewBytes {
		return nil, status.Errorf(codes.Internal, "avatar %q: preview of %d bytes (want 1..%d)", name, len(p.Image), MaxPreviewBytes)
	}
	return &fleetv1.AvatarPreviewResponse{
		Image: p.Image, ContentType: p.ContentType,
		Width: uint32(p.Width), Height: uint32(p.Height),
	}, nil
}
