package sessions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// Errors of the signaling calls (WHEP/WHIP), beyond the package's others.
var (
	// ErrInvalidSDP: the worker's SFU refused the offer.
	ErrInvalidSDP = errors.New("invalid SDP offer")
	// ErrRoomFull: the session has its maximum of viewers (or publishers).
	ErrRoomFull = errors.New("session has no room for another peer")
	// ErrNoMedia: the hosting worker has no SFU, or it is not reachable.
	ErrNoMedia = errors.New("worker serves no media")
	// ErrTooManyPending: the session, or the viewer's token, has its
	// maximum of viewers still connecting.
	ErrTooManyPending = errors.New("too many viewers connecting")
)

// pendingViewersReason is the worker's ErrorInfo reason for
// ErrTooManyPending (worker/pkg/server.PendingViewersReason).
const pendingViewersReason = "PENDING_VIEWERS"

// ViewerParams qualify a WHEP offer: the viewer token's id (a digest of
// the token, never the token) and the session owner's caps on viewers
// still connecting (0: the worker's defaults).
type ViewerParams struct {
	TokenID                        string
	MaxPending, MaxPendingPerToken int
}

// Answer is a worker's answer to a WHEP or WHIP offer.
type Answer struct {
	// PeerID names the viewer or publisher (its resource URL).
	PeerID string
	SDP    string
	// ICEServers are the STUN/TURN servers the client should use.
	ICEServers []*fleetv1.IceServer
}

// peerIDPattern is what a worker may return as a viewer or publisher id;
// it is also the shape the worker accepts back on removal.
var peerIDPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// ValidPeerID reports whether id can name a viewer or publisher.
func ValidPeerID(id string) bool { return peerIDPattern.MatchString(id) }

// clientOf returns the worker client of a session's worker.
func (m *Manager) clientOf(sess *fleetv1.Session) (fleetv1.WorkerServiceClient, error) {
	view, ok := m.opts.Registry.Worker(sess.GetWorkerId())
	if !ok {
		return nil, fmt.Errorf("session %s: worker %s: %w", sess.GetId(), sess.GetWorkerId(), ErrUnavailable)
	}
	return m.opts.Workers.Client(view.Worker.GetId(), view.Worker.GetGrpcAddress())
}

// AddViewer forwards a WHEP offer for a ready session to its worker.
func (m *Manager) AddViewer(ctx context.Context, sess *fleetv1.Session, offer string, vp ViewerParams) (Answer, error) {
	cl, err := m.clientOf(sess)
	if err != nil {
		return Answer{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.SignalingTimeout)
	defer cancel()
	resp, err := cl.AddViewer(cctx, &fleetv1.AddViewerRequest{
		SessionId: sess.GetId(), OfferSdp: offer, TokenId: vp.TokenID,
		MaxPending: clampCount(vp.MaxPending), MaxPendingPerToken: clampCount(vp.MaxPendingPerToken),
	})
	if err != nil {
		return Answer{}, signalingError("add viewer", err)
	}
	return checkAnswer("add viewer", Answer{PeerID: resp.GetViewerId(), SDP: resp.GetAnswerSdp(), ICEServers: resp.GetIceServers()})
}

// RemoveViewer forwards the end of a WHEP viewer to the session's worker.
func (m *Manager) RemoveViewer(ctx context.Context, sess *fleetv1.Session, viewerID string) error {
	cl, err := m.clientOf(sess)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	if _, err := cl.RemoveViewer(cctx, &fleetv1.RemoveViewerRequest{SessionId: sess.GetId(), ViewerId: viewerID}); err != nil {
		return signalingError("remove viewer", err)
	}
	return nil
}

// AddPublisher forwards a WHIP offer for a ready session to its worker.
func (m *Manager) AddPublisher(ctx context.Context, sess *fleetv1.Session, offer string) (Answer, error) {
	cl, err := m.clientOf(sess)
	if err != nil {
		return Answer{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.SignalingTimeout)
	defer cancel()
	resp, err := cl.AddPublisher(cctx, &fleetv1.AddPublisherRequest{SessionId: sess.GetId(), OfferSdp: offer})
	if err != nil {
		return Answer{}, signalingError("add publisher", err)
	}
	return checkAnswer("add publisher", Answer{PeerID: resp.GetPublisherId(), SDP: resp.GetAnswerSdp(), ICEServers: resp.GetIceServers()})
}

// RemovePublisher forwards the end of a WHIP publisher to the session's worker.
func (m *Manager) RemovePublisher(ctx context.Context, sess *fleetv1.Session, publisherID string) error {
	cl, err := m.clientOf(sess)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	if _, err := cl.RemovePublisher(cctx, &fleetv1.RemovePublisherRequest{SessionId: sess.GetId(), PublisherId: publisherID}); err != nil {
		return signalingError("remove publisher", err)
	}
	return nil
}

// LiveStatus asks the session's worker for its status, waiting at most
// timeout: its media figures (Stats, nil when it has none) and its LiveKit
// room connection (Livekit, nil when it joined none).
func (m *Manager) LiveStatus(ctx context.Context, sess *fleetv1.Session, timeout time.Duration) (*fleetv1.SessionStatusResponse, error) {
	cl, err := m.clientOf(sess)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cl.SessionStatus(cctx, &fleetv1.SessionStatusRequest{SessionId: sess.GetId()})
	if err != nil {
		return nil, grpcError("session status", err)
	}
	return resp, nil
}

// checkAnswer refuses what a worker must never send: a client could not
// use it, so it is a fault of the worker, not of the request.
func checkAnswer(op string, a Answer) (Answer, error) {
	if !ValidPeerID(a.PeerID) || a.SDP == "" {
		return Answer{}, fmt.Errorf("%s: worker answered with peer id %q and %d bytes of SDP", op, a.PeerID, len(a.SDP))
	}
	return a, nil
}

// signalingError maps a worker's gRPC error on a signaling call (see
// worker/pkg/server/signaling.go for the codes it sends).
func signalingError(op string, err error) error {
	msg := status.Convert(err).Message()
	switch status.Code(err) {
	case codes.InvalidArgument:
		return fmt.Errorf("%s: %w: %s", op, ErrInvalidSDP, msg)
	case codes.NotFound, codes.FailedPrecondition:
		return fmt.Errorf("%s: %w: %s", op, ErrNotFound, msg)
	case codes.ResourceExhausted:
		if hasReason(err, pendingViewersReason) {
			return fmt.Errorf("%s: %w: %s", op, ErrTooManyPending, msg)
		}
		return fmt.Errorf("%s: %w: %s", op, ErrRoomFull, msg)
	case codes.Unimplemented:
		return fmt.Errorf("%s: %w: %s", op, ErrNoMedia, msg)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%s: %w: %v", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// hasReason reports whether a gRPC error carries an ErrorInfo with reason.
func hasReason(err error, reason string) bool {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return true
		}
	}
	return false
}

// clampCount turns a count into the request's field (negative: 0).
func clampCount(n int) uint32 {
	return uint32(max(0, min(n, 1<<16)))
}
