package httpapi

import (
	"math"
	"strings"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

func sessionState(s fleetv1.SessionState) string {
	switch s {
	case fleetv1.SessionState_SESSION_STATE_PLACING:
		return apiv1.StatePlacing
	case fleetv1.SessionState_SESSION_STATE_STARTING:
		return apiv1.StateStarting
	case fleetv1.SessionState_SESSION_STATE_READY:
		return apiv1.StateReady
	case fleetv1.SessionState_SESSION_STATE_ENDED:
		return apiv1.StateEnded
	case fleetv1.SessionState_SESSION_STATE_FAILED:
		return apiv1.StateFailed
	}
	return "unknown"
}

func endReason(r fleetv1.EndReason) string {
	if r == fleetv1.EndReason_END_REASON_UNSPECIFIED {
		return ""
	}
	// END_REASON_IDLE_TIMEOUT → idle_timeout
	return strings.ToLower(strings.TrimPrefix(r.String(), "END_REASON_"))
}

// toSession converts a record; baseURL roots the WHEP URL.
func toSession(s *fleetv1.Session, baseURL string) apiv1.Session {
	out := apiv1.Session{
		ID:                 s.GetId(),
		State:              sessionState(s.GetState()),
		WorkerID:           s.GetWorkerId(),
		GPU:                s.GetGpu(),
		Avatar:             s.GetAvatar(),
		Voice:              s.GetVoice(),
		Labels:             s.GetLabels(),
		IdleTimeoutSeconds: s.GetIdleTimeoutSeconds(),
		MaxDurationSeconds: s.GetMaxDurationSeconds(),
		CreatedAt:          s.GetCreatedAt().AsTime(),
		EndReason:          endReason(s.GetEndReason()),
		EndMessage:         s.GetEndMessage(),
		WHEPURL:            baseURL + "/v1/sessions/" + s.GetId() + "/whep",
	}
	if s.GetEndedAt() != nil {
		t := s.GetEndedAt().AsTime()
		out.EndedAt = &t
	}
	out.RestartPolicy = restartPolicy(s.GetRestartPolicy())
	out.ReplaceTimeoutSeconds = s.GetReplaceTimeoutSeconds()
	if out.ReplaceTimeoutSeconds == 0 {
		out.ReplaceTimeoutSeconds = defaultReplaceTimeout
	}
	out.Moves, out.MovedFrom, out.MoveReason = s.GetMoves(), s.GetMovedFrom(), s.GetMoveReason()
	if s.GetPlacedAt() != nil {
		t := s.GetPlacedAt().AsTime()
		out.PlacedAt = &t
	}
	if s.GetLostAt() != nil {
		t := s.GetLostAt().AsTime()
		out.LostAt = &t
	}
	for _, r := range s.GetRecordings() {
		out.Recordings = append(out.Recordings, toRecording(r))
	}
	if lk := s.GetLivekit(); lk != nil {
		out.LiveKit = &apiv1.LiveKitState{URL: lk.GetUrl(), State: liveKitState(s.GetState())}
	}
	return out
}

// liveKitState is where a session stands in its LiveKit room, from its
// state: a ready session has joined (its start fails if the join does).
func liveKitState(st fleetv1.SessionState) string {
	switch st {
	case fleetv1.SessionState_SESSION_STATE_READY:
		return apiv1.LiveKitJoined
	case fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.SessionState_SESSION_STATE_FAILED:
		return apiv1.LiveKitLeft
	}
	return apiv1.LiveKitJoining
}

// maxLiveKitError bounds a worker's livekit last_error in a response.
const maxLiveKitError = 256

// withLiveStatus adds what a session's worker answered (nil: it did not)
// to its Session: the media figures, and the LiveKit room connection's live
// state in place of the one derived from the session's (a worker's state
// that is none of the known ones is ignored).
func withLiveStatus(out *apiv1.Session, st *fleetv1.SessionStatusResponse) {
	out.Stats = toStats(st.GetStats())
	lk := st.GetLivekit()
	if out.LiveKit == nil || lk == nil {
		return
	}
	switch lk.GetState() {
	case apiv1.LiveKitJoining, apiv1.LiveKitJoined, apiv1.LiveKitReconnecting, apiv1.LiveKitLeft:
	default:
		return
	}
	n := lk.GetReconnects()
	out.LiveKit.State, out.LiveKit.Reconnects = lk.GetState(), &n
	msg := strings.ToValidUTF8(lk.GetLastError(), "?")
	if len(msg) > maxLiveKitError {
		msg = strings.ToValidUTF8(msg[:maxLiveKitError], "")
	}
	out.LiveKit.LastError = msg
}

func toRecording(r *fleetv1.Recording) apiv1.Recording {
	out := apiv1.Recording{ID: r.GetId(), State: r.GetState(), StartedAt: r.GetStartedAt().AsTime(), Bytes: r.GetBytes(),
		DurationSeconds: r.GetDuration().AsDuration().Seconds(), Location: r.GetLocation(), WorkerID: r.GetWorkerId(), Error: r.GetError()}
	if r.GetStoppedAt() != nil {
		t := r.GetStoppedAt().AsTime()
		out.StoppedAt = &t
	}
	return out
}

func restartPolicy(p fleetv1.RestartPolicy) string {
	if p == fleetv1.RestartPolicy_RESTART_POLICY_NEVER {
		return apiv1.RestartNever
	}
	return apiv1.RestartOnWorkerLost
}

func workerState(v registry.WorkerView) string {
	switch {
	case v.Down:
		return apiv1.WorkerDown
	case v.Draining():
		return apiv1.WorkerDraining
	}
	return apiv1.WorkerActive
}

func toWorker(v registry.WorkerView) apiv1.Worker {
	w := apiv1.Worker{
		ID:       v.Worker.GetId(),
		State:    workerState(v),
		Address:  v.Worker.GetGrpcAddress(),
		Sessions: v.Sessions,
		GPUs:     []apiv1.GPU{},

		RecordingStore: v.Worker.GetRecordingStore(),
	}
	for _, g := range v.Worker.GetGpus() {
		w.GPUs = append(w.GPUs, apiv1.GPU{Index: g.GetIndex(), Name: g.GetName(), Slots: g.GetSlots(), Used: uint32(v.UsedOn(g.GetIndex())),
			Capacity: toCapacity(g.GetCapacity())})
	}
	return w
}

// toCapacity converts a device's slot measurement; nil when it has none.
func toCapacity(c *fleetv1.Capacity) *apiv1.Capacity {
	if c == nil {
		return nil
	}
	out := &apiv1.Capacity{
		MeasuredAt: c.GetMeasuredAt().AsTime().UTC(), TookMS: float64(c.GetTook().AsDuration().Microseconds()) / 1000,
		Device: c.GetDevice(), Timings: []apiv1.BatchTiming{}, Batch: c.GetBatch(), Utilisation: c.GetUtilisation(),
		CPUThreads: c.GetCpuThreads(), PipelineCPUMS: c.GetPipelineCpuMs(), Bound: c.GetBound(), Rule: c.GetRule(),
	}
	for _, t := range c.GetTimings() {
		out.Timings = append(out.Timings, apiv1.BatchTiming{Batch: t.GetBatch(), MSPerFrame: t.GetMsPerFrame()})
	}
	return out
}

// toWorkerRecord converts a worker record seen outside the cache (events).
func toWorkerRecord(w *fleetv1.Worker) *apiv1.Worker {
	if w == nil {
		return nil
	}
	out := toWorker(registry.WorkerView{Worker: w})
	if w.GetState() == fleetv1.WorkerState_WORKER_STATE_DRAINING {
		out.State = apiv1.WorkerDraining
	}
	return &out
}

// toStats converts a worker's media figures; nil stays nil.
func toStats(s *fleetv1.SessionStats) *apiv1.SessionStats {
	if s == nil {
		return nil
	}
	out := &apiv1.SessionStats{
		VideoFramesSent:    s.GetVideoFramesSent(),
		VideoKeyframesSent: s.GetVideoKeyframesSent(),
		AudioPacketsSent:   s.GetAudioPacketsSent(),
		VideoBitrateBPS:    finite(s.GetVideoBitrateBps()),
		AudioBitrateBPS:    finite(s.GetAudioBitrateBps()),
		Publishers:         s.GetPublishers(),
		Viewers:            make([]apiv1.ViewerStats, 0, len(s.GetViewers())),
	}
	for _, v := range s.GetViewers() {
		vs := apiv1.ViewerStats{
			ID:          v.GetId(),
			State:       v.GetState(),
			PacketsSent: v.GetPacketsSent(),
			BytesSent:   v.GetBytesSent(),
			BitrateBPS:  finite(v.GetBitrateBps()),
			NACKs:       v.GetNacksReceived(),
			PLIs:        v.GetPlisReceived(),
			FIRs:        v.GetFirsReceived(),
			RTTMillis:   finite(v.GetRttMs()),
		}
		if v.GetConnectedAt() != nil {
			t := v.GetConnectedAt().AsTime()
			vs.ConnectedAt = &t
		}
		out.Viewers = append(out.Viewers, vs)
	}
	return out
}

// finite keeps NaN and ±Inf (which JSON cannot carry) out of the API.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
