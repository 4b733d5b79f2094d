// Package server serves fleetv1.WorkerService, the control plane's way into a
// worker, over a session Runtime. It trusts nothing it is sent: every
// request is validated, a start must match a slot reservation in etcd, and
// runtime errors become the gRPC status codes the control plane acts on
// (InvalidArgument and NotFound: the caller's fault; FailedPrecondition: not
// now or not here; ResourceExhausted: retry later; Unavailable: etcd
// unreachable).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	pcmwav "github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// MaxMessageBytes is the largest request the server accepts: a 50 MiB WAV
// plus framing. Clients sending audio must raise their send limit to match.
const MaxMessageBytes = runtime.MaxWAVBytes + 1<<20

var sessionIDPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// ValidSessionID reports whether id is a well-formed session id: an opaque
// string of [a-zA-Z0-9_-], 1..64 long (it becomes part of etcd keys and
// NATS subjects).
func ValidSessionID(id string) bool { return sessionIDPattern.MatchString(id) }

// Slots reads and tracks slot ownership in etcd (slotwatch.Watcher).
type Slots interface {
	// Owner is the id of the session holding a slot, "" when free.
	Owner(ctx context.Context, gpu, slot uint32) (string, error)
	// OwnerAt is Owner as of a revision or later, from the watch.
	OwnerAt(ctx context.Context, rev int64, gpu, slot uint32) (string, error)
	// Track stops the session when its slot goes; Untrack forgets it.
	Track(sessionID string, gpu, slot uint32)
	// TrackIfHeld tracks the session only if the watch still sees it in
	// its slot.
	TrackIfHeld(sessionID string, gpu, slot uint32) bool
	Untrack(sessionID string)
}

// SpeechProgress keeps the durable speech queue in etcd up to date as a
// session speaks (the agent's writer).
type SpeechProgress interface {
	// Track returns the progress callback of a queued text: it is called
	// with what is left of text to speak after each sentence, "" at the
	// end, and must not block.
	Track(sessionID, speechID, text string) func(remaining string)
}

// trackedSpeaker is a Runtime that reports how far a text has been spoken
// (mediaruntime.Runtime); a runtime that does not leaves the queue's
// entries to the session's end.
type trackedSpeaker interface {
	SpeakTracked(ctx context.Context, id, text string, interrupt bool, progress func(remaining string)) error
}

// Config configures a Server.
type Config struct {
	WorkerID string
	Runtime  runtime.Runtime
	Slots    Slots
	// Accepting reports whether new sessions may start (false while the
	// worker drains); nil means always.
	Accepting func() bool
	// Signaling is the embedded SFU; nil answers the WHEP/WHIP calls with
	// Unimplemented.
	Signaling Signaling
	// Speech records speech progress in etcd; nil records none.
	Speech SpeechProgress
	// Previews serves AvatarPreview; nil answers NotFound.
	Previews Previews
	Logger   *slog.Logger
}

// Server implements fleetv1.WorkerServiceServer.
type Server struct {
	fleetv1.UnimplementedWorkerServiceServer
	worker    string
	rt        runtime.Runtime
	slots     Slots
	accepting func() bool
	sig       Signaling
	speech    SpeechProgress
	spoken    acceptedSpeech
	previews  Previews
	log       *slog.Logger
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Runtime == nil || cfg.Slots == nil {
		return nil, errors.New("server: runtime and slots are required")
	}
	if !fleetstore.ValidName(cfg.WorkerID) {
		return nil, fmt.Errorf("server: invalid worker id %q", cfg.WorkerID)
	}
	s := &Server{worker: cfg.WorkerID, rt: cfg.Runtime, slots: cfg.Slots, accepting: cfg.Accepting, sig: cfg.Signaling, speech: cfg.Speech, previews: cfg.Previews, log: cfg.Logger}
	if s.accepting == nil {
		s.accepting = func() bool { return true }
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// NewGRPC returns a gRPC server with the worker service registered, the
// message limit raised for audio, and panics turned into Internal errors.
func NewGRPC(s *Server, opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.ChainUnaryInterceptor(recoverUnary(s.log)),
	}, opts...)
	g := grpc.NewServer(opts...)
	fleetv1.RegisterWorkerServiceServer(g, s)
	return g
}

// recoverUnary keeps a panicking handler from taking the worker (and every
// other session on it) down.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in gRPC handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, "internal error")
			}
		}()
		return handler(ctx, req)
	}
}

func checkSessionID(id string) error {
	if !ValidSessionID(id) {
		return status.Errorf(codes.InvalidArgument, "session_id %q: want 1..64 characters of [a-zA-Z0-9_-]", id)
	}
	return nil
}

// StartSession implements fleetv1.WorkerServiceServer.
func (s *Server) StartSession(ctx context.Context, req *fleetv1.StartSessionRequest) (*fleetv1.StartSessionResponse, error) {
	sess := req.GetSession()
	if err := s.validateStart(sess); err != nil {
		return nil, err
	}
	id := sess.GetId()
	if !s.accepting() {
		return nil, status.Errorf(codes.FailedPrecondition, "worker %s is draining: no new sessions", s.worker)
	}
	if err := s.checkOwner(ctx, sess, req.GetReservationRevision()); err != nil {
		return nil, err
	}
	if err := s.rt.Start(ctx, sess); err != nil {
		return nil, s.toStatus(fmt.Errorf("start session %s: %w", id, err))
	}
	// Tracked only once it runs (a refused start must not disturb the
	// tracking of a session already running). A slot freed after this is
	// seen by the watch; one freed while the session started, before it was
	// tracked, is caught here: the watcher's view no longer holds it.
	if err := s.track(ctx, sess, req.GetReservationRevision()); err != nil {
		s.stopLocal(ctx, id, fleetv1.EndReason_END_REASON_DELETED)
		return nil, err
	}
	st, err := s.rt.Status(id)
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.spoken.forget(id)
	s.log.Info("session started", "session", id, "gpu", sess.GetGpu(), "slot", sess.GetSlot())
	return &fleetv1.StartSessionResponse{State: st.State}, nil
}

func (s *Server) validateStart(sess *fleetv1.Session) error {
	if sess == nil {
		return status.Error(codes.InvalidArgument, "session is required")
	}
	if err := checkSessionID(sess.GetId()); err != nil {
		return err
	}
	if sess.GetWorkerId() != s.worker {
		return status.Errorf(codes.InvalidArgument, "session %s is placed on worker %q, this is %q", sess.GetId(), sess.GetWorkerId(), s.worker)
	}
	if a := sess.GetAvatar(); a != "" && !fleetstore.ValidName(a) {
		return status.Errorf(codes.InvalidArgument, "avatar %q is not a valid name", a)
	}
	if v := sess.GetVoice(); v != "" && !fleetstore.ValidName(v) {
		return status.Errorf(codes.InvalidArgument, "voice %q is not a valid name", v)
	}
	if fleetstore.Terminal(sess.GetState()) {
		return status.Errorf(codes.FailedPrecondition, "session %s has already ended (%s)", sess.GetId(), sess.GetState())
	}
	return nil
}

// track starts following a started session's slot. With the reservation's
// revision the watch already saw the slot held, so tracking checks the
// watch's current view in the same step; without, it reads etcd again.
func (s *Server) track(ctx context.Context, sess *fleetv1.Session, reservedAt int64) error {
	if reservedAt == 0 {
		s.slots.Track(sess.GetId(), sess.GetGpu(), sess.GetSlot())
		return s.checkOwner(ctx, sess, 0)
	}
	if !s.slots.TrackIfHeld(sess.GetId(), sess.GetGpu(), sess.GetSlot()) {
		return status.Errorf(codes.FailedPrecondition, "session %s lost its reservation on GPU %d slot %d while starting",
			sess.GetId(), sess.GetGpu(), sess.GetSlot())
	}
	return nil
}

// checkOwner refuses a start whose slot key does not hold the session: a
// stale start (the session ended meanwhile) or a forged one. With the
// reservation's revision it answers from the slot watch once the watch has
// reached that revision; without, it reads etcd.
func (s *Server) checkOwner(ctx context.Context, sess *fleetv1.Session, reservedAt int64) error {
	var owner string
	var err error
	if reservedAt > 0 {
		owner, err = s.slots.OwnerAt(ctx, reservedAt, sess.GetGpu(), sess.GetSlot())
	} else {
		owner, err = s.slots.Owner(ctx, sess.GetGpu(), sess.GetSlot())
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return status.FromContextError(ctxErr).Err()
		}
		return status.Errorf(codes.Unavailable, "check slot reservation: %v", err)
	}
	if owner != sess.GetId() {
		held := "free"
		if owner != "" {
			held = "held by another session"
		}
		return status.Errorf(codes.FailedPrecondition, "session %s has no reservation on GPU %d slot %d (slot is %s)",
			sess.GetId(), sess.GetGpu(), sess.GetSlot(), held)
	}
	return nil
}

func (s *Server) stopLocal(ctx context.Context, id string, reason fleetv1.EndReason) {
	s.slots.Untrack(id)
	s.spoken.forget(id)
	if err := s.rt.Stop(ctx, id, reason); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		s.log.Warn("stop session", "session", id, "err", err)
	}
}

// StopSession implements fleetv1.WorkerServiceServer. Stopping a session
// that does not run here succeeds: stops are retried and may race the slot
// watch.
func (s *Server) StopSession(ctx context.Context, req *fleetv1.StopSessionRequest) (*fleetv1.StopSessionResponse, error) {
	id := req.GetSessionId()
	if err := checkSessionID(id); err != nil {
		return nil, err
	}
	reason := req.GetReason()
	if _, known := fleetv1.EndReason_name[int32(reason)]; !known {
		return nil, status.Errorf(codes.InvalidArgument, "unknown end reason %d", reason)
	}
	if reason == fleetv1.EndReason_END_REASON_UNSPECIFIED {
		reason = fleetv1.EndReason_END_REASON_DELETED
	}
	s.slots.Untrack(id)
	if err := s.rt.Stop(ctx, id, reason); err != nil && !errors.Is(err, runtime.ErrNotFound) {
		return nil, s.toStatus(fmt.Errorf("stop session %s: %w", id, err))
	}
	return &fleetv1.StopSessionResponse{}, nil
}

// SpeakText implements fleetv1.WorkerServiceServer.
func (s *Server) SpeakText(ctx context.Context, req *fleetv1.SpeakTextRequest) (*fleetv1.SpeakTextResponse, error) {
	if err := checkSessionID(req.GetSessionId()); err != nil {
		return nil, err
	}
	if err := runtime.ValidateText(req.GetText()); err != nil {
		return nil, s.toStatus(err)
	}
	id, speechID := req.GetSessionId(), req.GetSpeechId()
	if speechID != "" && !fleetstore.ValidSpeechID(speechID) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid speech id %q", speechID)
	}
	if speechID != "" && !s.spoken.claim(id, speechID) {
		// Taken already: sent again by a Speak that raced with the replay
		// of the session's queue after a move.
		s.log.Info("speech already taken; not spoken twice", "session", id, "speech", speechID)
		return &fleetv1.SpeakTextResponse{}, nil
	}
	var err error
	if ts, ok := s.rt.(trackedSpeaker); ok && speechID != "" && s.speech != nil {
		err = ts.SpeakTracked(ctx, id, req.GetText(), req.GetInterrupt(), s.speech.Track(id, speechID, req.GetText()))
	} else {
		err = s.rt.Speak(ctx, id, req.GetText(), req.GetInterrupt())
	}
	if err != nil {
		if speechID != "" {
			s.spoken.release(id, speechID)
		}
		return nil, s.toStatus(err)
	}
	return &fleetv1.SpeakTextResponse{}, nil
}

// PushAudio implements fleetv1.WorkerServiceServer.
func (s *Server) PushAudio(ctx context.Context, req *fleetv1.PushAudioRequest) (*fleetv1.PushAudioResponse, error) {
	if err := checkSessionID(req.GetSessionId()); err != nil {
		return nil, err
	}
	if err := runtime.ValidateWAVHeader(req.GetWav()); err != nil {
		return nil, s.toStatus(err)
	}
	// The header decides before anything is decoded: format, 8..192 kHz,
	// 1..2 channels, at most a session's queue of audio. (The session's
	// pipeline checks again against its own queue.)
	if _, err := pcmwav.Probe(req.GetWav(), pcmwav.MaxUploadDuration); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "audio: %v", err)
	}
	if err := s.rt.PushAudio(ctx, req.GetSessionId(), req.GetWav(), req.GetInterrupt()); err != nil {
		return nil, s.toStatus(err)
	}
	return &fleetv1.PushAudioResponse{}, nil
}

// Interrupt implements fleetv1.WorkerServiceServer.
func (s *Server) Interrupt(ctx context.Context, req *fleetv1.InterruptRequest) (*fleetv1.InterruptResponse, error) {
	if err := checkSessionID(req.GetSessionId()); err != nil {
		return nil, err
	}
	if err := s.rt.Interrupt(ctx, req.GetSessionId()); err != nil {
		return nil, s.toStatus(err)
	}
	return &fleetv1.InterruptResponse{}, nil
}

// SessionStatus implements fleetv1.WorkerServiceServer.
func (s *Server) SessionStatus(_ context.Context, req *fleetv1.SessionStatusRequest) (*fleetv1.SessionStatusResponse, error) {
	if err := checkSessionID(req.GetSessionId()); err != nil {
		return nil, err
	}
	st, err := s.rt.Status(req.GetSessionId())
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &fleetv1.SessionStatusResponse{State: st.State, Speaking: st.Speaking, FramesSent: st.FramesSent, Livekit: st.LiveKit}
	if s.sig != nil {
		// Media figures are best effort: a session without a room yet
		// still has a status.
		if stats, err := s.sig.Stats(req.GetSessionId()); err == nil {
			resp.Stats = stats
		}
	}
	return resp, nil
}

// toStatus maps runtime errors to gRPC codes; anything unrecognised is an
// Internal error whose detail stays in the worker's log.
func (s *Server) toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, runtime.ErrInvalidInput), errors.Is(err, ErrInvalidSDP):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, runtime.ErrNotFound), errors.Is(err, ErrNoRoom):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrTooManyPending):
		return pendingStatus(err)
	case errors.Is(err, runtime.ErrSlotBusy), errors.Is(err, ErrRoomFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, runtime.ErrClosed):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, runtime.ErrRoomJoin):
		// The message is safe to pass on: the livekit package redacts
		// the token from it.
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	s.log.Error("internal error", "err", err)
	return status.Error(codes.Internal, "internal error")
}
