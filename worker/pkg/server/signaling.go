package server

import (
	"context"
	"errors"
	"regexp"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pendingStatus is the status of ErrTooManyPending: ResourceExhausted,
// told apart from a full room by its ErrorInfo reason.
func pendingStatus(err error) error {
	st := status.New(codes.ResourceExhausted, err.Error())
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: PendingViewersReason, Domain: "avatarfleet"}); derr == nil {
		st = d
	}
	return st.Err()
}

// Signaling is the worker's embedded SFU as the gRPC service sees it: WHEP
// viewers and WHIP publishers of the sessions' rooms, and their figures.
// Implementations wrap their errors with the sentinels below so the control
// plane can answer with the right HTTP code.
type Signaling interface {
	// AddViewer answers a WHEP offer for a running session, within the
	// pending-viewer caps of lim.
	AddViewer(ctx context.Context, sessionID, offer string, lim ViewerLimits) (viewerID, answer string, err error)
	// RemoveViewer ends a viewer; an unknown viewer is not an error.
	RemoveViewer(ctx context.Context, sessionID, viewerID string) error
	// AddPublisher answers a WHIP offer: its audio drives the session.
	AddPublisher(ctx context.Context, sessionID, offer string) (publisherID, answer string, err error)
	// RemovePublisher ends a publisher; an unknown one is not an error.
	RemovePublisher(ctx context.Context, sessionID, publisherID string) error
	// Stats are the session's media figures.
	Stats(sessionID string) (*fleetv1.SessionStats, error)
	// ICEServers are the STUN/TURN servers clients should use.
	ICEServers() []*fleetv1.IceServer
}

// ViewerLimits qualify one WHEP offer: the viewer token it came with (an
// id or digest, never the token) and the caps on viewers that have an
// answer but have not connected yet (0: the SFU's defaults).
type ViewerLimits struct {
	TokenID                        string
	MaxPending, MaxPendingPerToken int
}

// PendingViewersReason is the ErrorInfo reason of a ResourceExhausted
// status that refuses a viewer for too many pending viewers (not a full room).
const PendingViewersReason = "PENDING_VIEWERS"

// Errors a Signaling returns (wrapped).
var (
	// ErrInvalidSDP: the offer does not parse or offers nothing usable.
	ErrInvalidSDP = errors.New("invalid SDP offer")
	// ErrRoomFull: the session has its maximum of viewers.
	ErrRoomFull = errors.New("session has its maximum of viewers")
	// ErrNoRoom: the session has no room here (not running, or ended).
	ErrNoRoom = errors.New("no media room for session")
	// ErrTooManyPending: the session (or the viewer's token) has its
	// maximum of viewers still connecting.
	ErrTooManyPending = errors.New("too many viewers connecting")
)

// maxPendingCap bounds the pending-viewer caps a request may ask for.
const maxPendingCap = 1 << 16

// MaxSDPBytes bounds an offer; real offers are a few KiB.
const MaxSDPBytes = 64 << 10

var peerIDPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

func (s *Server) signaling() (Signaling, error) {
	if s.sig == nil {
		return nil, status.Error(codes.Unimplemented, "this worker has no media (SFU) configured")
	}
	return s.sig, nil
}

func checkOffer(sessionID, offer string) error {
	if err := checkSessionID(sessionID); err != nil {
		return err
	}
	if offer == "" || len(offer) > MaxSDPBytes {
		return status.Errorf(codes.InvalidArgument, "offer_sdp is %d bytes, want 1..%d: %v", len(offer), MaxSDPBytes, ErrInvalidSDP)
	}
	return nil
}

func checkPeer(sessionID, id string) error {
	if err := checkSessionID(sessionID); err != nil {
		return err
	}
	if !peerIDPattern.MatchString(id) {
		return status.Errorf(codes.InvalidArgument, "peer id %q: want 1..64 characters of [a-zA-Z0-9_-]", id)
	}
	return nil
}

// AddViewer implements fleetv1.WorkerServiceServer.
func (s *Server) AddViewer(ctx context.Context, req *fleetv1.AddViewerRequest) (*fleetv1.AddViewerResponse, error) {
	sig, err := s.signaling()
	if err != nil {
		return nil, err
	}
	if err := checkOffer(req.GetSessionId(), req.GetOfferSdp()); err != nil {
		return nil, err
	}
	id, answer, err := sig.AddViewer(ctx, req.GetSessionId(), req.GetOfferSdp(), ViewerLimits{
		TokenID:            req.GetTokenId(),
		MaxPending:         int(min(req.GetMaxPending(), maxPendingCap)),
		MaxPendingPerToken: int(min(req.GetMaxPendingPerToken(), maxPendingCap)),
	})
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &fleetv1.AddViewerResponse{ViewerId: id, AnswerSdp: answer, IceServers: sig.ICEServers()}, nil
}

// RemoveViewer implements fleetv1.WorkerServiceServer.
func (s *Server) RemoveViewer(ctx context.Context, req *fleetv1.RemoveViewerRequest) (*fleetv1.RemoveViewerResponse, error) {
	sig, err := s.signaling()
	if err != nil {
		return nil, err
	}
	if err := checkPeer(req.GetSessionId(), req.GetViewerId()); err != nil {
		return nil, err
	}
	if err := sig.RemoveViewer(ctx, req.GetSessionId(), req.GetViewerId()); err != nil {
		return nil, s.toStatus(err)
	}
	return &fleetv1.RemoveViewerResponse{}, nil
}

// AddPublisher implements fleetv1.WorkerServiceServer.
func (s *Server) AddPublisher(ctx context.Context, req *fleetv1.AddPublisherRequest) (*fleetv1.AddPublisherResponse, error) {
	sig, err := s.signaling()
	if err != nil {
		return nil, err
	}
	if err := checkOffer(req.GetSessionId(), req.GetOfferSdp()); err != nil {
		return nil, err
	}
	id, answer, err := sig.AddPublisher(ctx, req.GetSessionId(), req.GetOfferSdp())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &fleetv1.AddPublisherResponse{PublisherId: id, AnswerSdp: answer, IceServers: sig.ICEServers()}, nil
}

// RemovePublisher implements fleetv1.WorkerServiceServer.
func (s *Server) RemovePublisher(ctx context.Context, req *fleetv1.RemovePublisherRequest) (*fleetv1.RemovePublisherResponse, error) {
	sig, err := s.signaling()
	if err != nil {
		return nil, err
	}
	if err := checkPeer(req.GetSessionId(), req.GetPublisherId()); err != nil {
		return nil, err
	}
	if err := sig.RemovePublisher(ctx, req.GetSessionId(), req.GetPublisherId()); err != nil {
		return nil, s.toStatus(err)
	}
	return &fleetv1.RemovePublisherResponse{}, nil
}
