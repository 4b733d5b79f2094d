// Package apiv1 holds the JSON shapes of the public REST API (/v1): the
// resources, the request bodies and the error envelope. The server and the
// Go client (avatarctl) share them, so the two cannot drift apart.
package apiv1

import "time"

// Session states.
const (
	StatePlacing  = "placing"
	StateStarting = "starting"
	StateReady    = "ready"
	StateEnded    = "ended"
	StateFailed   = "failed"
)

// End reasons.
const (
	ReasonDeleted     = "deleted"
	ReasonIdleTimeout = "idle_timeout"
	ReasonMaxDuration = "max_duration"
	ReasonViewerGone  = "viewer_gone"
	ReasonWorkerLost  = "worker_lost"
	ReasonDrained     = "drained"
	ReasonError       = "error"
)

// Restart policies: what happens to a session whose worker is lost.
const (
	RestartOnWorkerLost = "on_worker_lost"
	RestartNever        = "never"
)

// Move reasons.
const (
	MoveWorkerLost = "worker_lost"
	MoveDrain      = "drain"
)

// Worker states.
const (
	WorkerActive   = "active"
	WorkerDraining = "draining"
	WorkerDown     = "down"
)

// Session is one avatar session.
type Session struct {
	ID                 string            `json:"id"`
	State              string            `json:"state"`
	WorkerID           string            `json:"worker_id"`
	GPU                uint32            `json:"gpu"`
	Avatar             string            `json:"avatar"`
	Voice              string            `json:"voice"`
	Labels             map[string]string `json:"labels,omitempty"`
	IdleTimeoutSeconds uint32            `json:"idle_timeout_seconds"`
	MaxDurationSeconds uint32            `json:"max_duration_seconds"`
	CreatedAt          time.Time         `json:"created_at"`
	EndedAt            *time.Time        `json:"ended_at,omitempty"`
	EndReason          string            `json:"end_reason,omitempty"`
	EndMessage         string            `json:"end_message,omitempty"`
	// RestartPolicy is "on_worker_lost" (re-placed on another worker when
	// its worker is lost) or "never" (it fails with worker_lost).
	RestartPolicy string `json:"restart_policy"`
	// ReplaceTimeoutSeconds bounds how long a lost session waits for a new
	// slot before it fails with worker_lost.
	ReplaceTimeoutSeconds uint32 `json:"replace_timeout_seconds"`
	// Moves counts the session's moves to another worker; PlacedAt is when
	// its current placement started; MovedFrom and MoveReason
	// ("worker_lost", "drain") describe the last (or, while placing, the
	// current) move. LostAt is set while a lost session is being re-placed.
	Moves       uint32     `json:"moves"`
	PlacedAt    *time.Time `json:"placed_at,omitempty"`
	MovedFrom   string     `json:"moved_from,omitempty"`
	MoveReason  string     `json:"move_reason,omitempty"`
	LostAt      *time.Time `json:"lost_at,omitempty"`
	WHEPURL     string     `json:"whep_url"`
	ViewerToken string     `json:"viewer_token,omitempty"`
	// Stats are the media figures of a ready session, read from its worker
	// on GET /v1/sessions/{id}; absent when the worker did not answer in
	// time or has no media.
	Stats *SessionStats `json:"stats,omitempty"`
	// Recordings are the session's recordings (POST …/recordings).
	Recordings []Recording `json:"recordings,omitempty"`
	// LiveKit is the LiveKit room the session joins as a voice agent's
	// avatar, if it was created with one.
	LiveKit *LiveKitState `json:"livekit,omitempty"`
}

// Recording is a WebM recording (VP8 + Opus) of what a session's viewers
// see. State is recording, stopped or failed; Location is where the file
// is kept (dir:<path> or s3:<bucket>/<key>); Error says why it failed or
// which limit stopped it.
type Recording struct {
	ID              string     `json:"id"`
	State           string     `json:"state"`
	StartedAt       time.Time  `json:"started_at"`
	StoppedAt       *time.Time `json:"stopped_at,omitempty"`
	Bytes           int64      `json:"bytes"`
	DurationSeconds float64    `json:"duration_seconds"`
	Location        string     `json:"location,omitempty"`
	WorkerID        string     `json:"worker_id"`
	Error           string     `json:"error,omitempty"`
}

// Recording states.
const (
	RecordingRecording = "recording"
	RecordingStopped   = "stopped"
	RecordingFailed    = "failed"
)

// SessionStats are a session's media figures since it started.
type SessionStats struct {
	VideoFramesSent    uint64        `json:"video_frames_sent"`
	VideoKeyframesSent uint64        `json:"video_keyframes_sent"`
	AudioPacketsSent   uint64        `json:"audio_packets_sent"`
	VideoBitrateBPS    float64       `json:"video_bitrate_bps"`
	AudioBitrateBPS    float64       `json:"audio_bitrate_bps"`
	Publishers         uint32        `json:"publishers"`
	Viewers            []ViewerStats `json:"viewers"`
}

// ViewerStats are one WHEP viewer's figures.
type ViewerStats struct {
	ID          string     `json:"id"`
	ConnectedAt *time.Time `json:"connected_at,omitempty"`
	// State is the peer connection state (new, connecting, connected, …).
	State       string  `json:"state"`
	PacketsSent uint64  `json:"packets_sent"`
	BytesSent   uint64  `json:"bytes_sent"`
	BitrateBPS  float64 `json:"bitrate_bps"`
	NACKs       uint64  `json:"nacks"`
	PLIs        uint64  `json:"plis"`
	FIRs        uint64  `json:"firs"`
	// RTTMillis is the latest round-trip time; 0 before the first report.
	RTTMillis float64 `json:"rtt_ms"`
}

// SessionList is the body of GET /v1/sessions.
type SessionList struct {
	Sessions []Session `json:"sessions"`
	// NextPageToken, when set, lists the next page (page_token=…).
	NextPageToken string `json:"next_page_token,omitempty"`
}

// CreateSessionRequest is the body of POST /v1/sessions.
type CreateSessionRequest struct {
	Avatar             string            `json:"avatar,omitempty"`
	Voice              string            `json:"voice,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	IdleTimeoutSeconds *int              `json:"idle_timeout_seconds,omitempty"`
	MaxDurationSeconds *int              `json:"max_duration_seconds,omitempty"`
	// RestartPolicy is "on_worker_lost" (the default) or "never".
	RestartPolicy string `json:"restart_policy,omitempty"`
	// ReplaceTimeoutSeconds is 1..86400 (default 60).
	ReplaceTimeoutSeconds *int `json:"replace_timeout_seconds,omitempty"`
	// LiveKit makes the session join an existing LiveKit room as the avatar
	// of a voice agent (README, "LiveKit Agents").
	LiveKit *LiveKitJoin `json:"livekit,omitempty"`
}

// LiveKitJoin is where a session joins a LiveKit room: the server's URL
// (ws, wss, http or https) and the access token the agent minted for the
// avatar (kind agent, attribute lk.publish_on_behalf). The token is a
// secret: no response returns it.
type LiveKitJoin struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

// LiveKitState is a session's LiveKit room as responses show it: the URL
// and a state (joining, joined, reconnecting, left), never the token. GET
// /v1/sessions/{id} of a ready session shows its worker's live room
// connection, with Reconnects (then always present) and LastError; where
// the worker does not answer, and in lists, the state follows the
// session's own (ready: joined, ended or failed: left, else joining).
type LiveKitState struct {
	URL   string `json:"url"`
	State string `json:"state"`
	// Reconnects counts the times the connection dropped and the worker
	// began reconnecting; present only with the live state.
	Reconnects *uint32 `json:"reconnects,omitempty"`
	// LastError is the reason of the last drop or disconnection.
	LastError string `json:"last_error,omitempty"`
}

// LiveKit states.
const (
	LiveKitJoining      = "joining"
	LiveKitJoined       = "joined"
	LiveKitReconnecting = "reconnecting"
	LiveKitLeft         = "left"
)

// SpeakRequest is the body of POST /v1/sessions/{id}/speak.
type SpeakRequest struct {
	Text      string `json:"text"`
	Interrupt bool   `json:"interrupt,omitempty"`
}

// Token grants: what a session token allows.
const (
	// GrantSubscribe lets the bearer watch the session (WHEP).
	GrantSubscribe = "subscribe"
	// GrantPublish lets the bearer speak to the session (WHIP).
	GrantPublish = "publish"
)

// DrainRequest is the optional body of POST /v1/workers/{id}/drain.
type DrainRequest struct {
	// Migrate moves the worker's live sessions to other workers, one by
	// one at an idle moment, instead of waiting for them to end.
	Migrate bool `json:"migrate,omitempty"`
}

// CreateTokenRequest is the body of POST /v1/sessions/{id}/tokens.
type CreateTokenRequest struct {
	// Grants are "subscribe" (WHEP) and/or "publish" (WHIP); at least one.
	Grants []string `json:"grants"`
	// TTLSeconds is the token's lifetime, 60..86400; default the
	// server's viewer-token TTL.
	TTLSeconds *int `json:"ttl_seconds,omitempty"`
}

// Token is a session token issued by POST /v1/sessions/{id}/tokens.
type Token struct {
	Token     string    `json:"token"`
	Grants    []string  `json:"grants"`
	ExpiresAt time.Time `json:"expires_at"`
}

// GPU is one device of a worker.
type GPU struct {
	Index uint32 `json:"index"`
	Name  string `json:"name"`
	Slots uint32 `json:"slots"`
	Used  uint32 `json:"used"`
	// Capacity is how Slots was measured (worker --slots-per-gpu auto);
	// absent when it was configured.
	Capacity *Capacity `json:"capacity,omitempty"`
}

// Capacity is a device's timing of the worker's lip-sync model and the
// rule that turned it into its slot count.
type Capacity struct {
	MeasuredAt time.Time `json:"measured_at"`
	// TookMS is how long the measurement ran.
	TookMS float64 `json:"took_ms"`
	// Device is where the model ran: "cpu" or "gpu<index>".
	Device  string        `json:"device"`
	Timings []BatchTiming `json:"timings"`
	// Batch is the batch size whose cost the rule used.
	Batch uint32 `json:"batch"`
	// Utilisation is the planned share of each 40 ms frame.
	Utilisation float64 `json:"utilisation"`
	// CPUThreads is the host's CPU threads the rule counted.
	CPUThreads uint32 `json:"cpu_threads"`
	// PipelineCPUMS is the CPU per session and frame outside inference.
	PipelineCPUMS float64 `json:"pipeline_cpu_ms"`
	// Bound is the limit that decided: inference, cpu, memory, cap, min.
	Bound string `json:"bound"`
	// Rule is the formula with its numbers.
	Rule string `json:"rule"`
}

// BatchTiming is the cost of one batched inference call.
type BatchTiming struct {
	Batch      uint32  `json:"batch"`
	MSPerFrame float64 `json:"ms_per_frame"`
}

// Worker is one worker of the fleet.
type Worker struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Address  string `json:"address"`
	GPUs     []GPU  `json:"gpus"`
	Sessions int    `json:"sessions"`
	// RecordingStore is the shared store the worker writes recordings to
	// and can read any of them from (s3://host/bucket[/prefix]); empty
	// when they stay on its own disk.
	RecordingStore string `json:"recording_store,omitempty"`
}

// WorkerList is the body of GET /v1/workers.
type WorkerList struct {
	Workers []Worker `json:"workers"`
}

// Event is one lifecycle change, as sent on GET /v1/events.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	SessionID string    `json:"session_id,omitempty"`
	WorkerID  string    `json:"worker_id,omitempty"`
	Session   *Session  `json:"session,omitempty"`
	Worker    *Worker   `json:"worker,omitempty"`
	// MediaTimeMS is the session's media time, in milliseconds, of the
	// first (session.speaking_started) or last (session.speaking_ended)
	// frame of speech sent.
	MediaTimeMS *int64 `json:"media_time_ms,omitempty"`
	// FromWorker, ToWorker and Reason ("worker_lost" | "drain") describe a
	// session.moved event.
	FromWorker string `json:"from_worker,omitempty"`
	ToWorker   string `json:"to_worker,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Revision is the etcd revision a lifecycle event derives from (its id
	// is "<revision>-<n>"); absent on events from workers (speaking).
	Revision int64 `json:"revision,omitempty"`
}

// Error codes.
const (
	CodeInvalidRequest       = "invalid_request"
	CodeUnknownAvatar        = "unknown_avatar"
	CodeUnknownVoice         = "unknown_voice"
	CodeNotFound             = "not_found"
	CodeNoCapacity           = "no_capacity"
	CodeUnauthorized         = "unauthorized"
	CodeForbidden            = "forbidden"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodePayloadTooLarge      = "payload_too_large"
	CodeInvalidAudio         = "invalid_audio"
	CodeInvalidSDP           = "invalid_sdp"
	CodeSessionNotReady      = "session_not_ready"
	CodeConflict             = "conflict"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeInternal             = "internal"
	CodeUnavailable          = "unavailable"
	CodeQuotaExceeded        = "quota_exceeded"
	CodeRateLimited          = "rate_limited"
	CodeRequestTimeout       = "request_timeout"
	CodeSpeechQueueFull      = "speech_queue_full"
	CodeInvalidLiveKit       = "invalid_livekit"
)

// ErrorBody is the envelope of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a machine-readable code and a human message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// GetURL and GetToken read a possibly nil LiveKitJoin.
func (j *LiveKitJoin) GetURL() string {
	if j == nil {
		return ""
	}
	return j.URL
}

// GetToken: see GetURL.
func (j *LiveKitJoin) GetToken() string {
	if j == nil {
		return ""
	}
	return j.Token
}
