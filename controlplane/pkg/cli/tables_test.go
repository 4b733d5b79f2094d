package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

var (
	created = time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("CET", 3600))
	ended   = created.Add(90 * time.Second)
)

func TestRenderTables(t *testing.T) {
	tests := []struct {
		name   string
		render func(*strings.Builder) error
		want   string
	}{
		{
			name: "workers",
			render: func(b *strings.Builder) error {
				return renderWorkers(b, []apiv1.Worker{
					{ID: "gpu-node-1", State: "active", Address: "10.0.0.5:9090", Sessions: 3,
						GPUs: []apiv1.GPU{{Index: 0, Name: "H100", Slots: 2, Used: 2}, {Index: 1, Name: "H100", Slots: 2, Used: 1}}},
					{ID: "cpu1", State: "draining", Address: "", Sessions: 0,
						GPUs: []apiv1.GPU{{Index: 0, Name: "cpu", Slots: 2}}},
					{ID: "auto1", State: "active", Address: "", Sessions: 1,
						GPUs: []apiv1.GPU{{Index: 0, Name: "cpu", Slots: 15, Used: 1, Capacity: &apiv1.Capacity{Device: "cpu"}}}},
					{ID: "w\tbad\n", State: "down"},
				})
			},
			want: "" +
				"ID          STATE     ADDRESS        GPUS          SESSIONS\n" +
				"gpu-node-1  active    10.0.0.5:9090  0:2/2 1:1/2   3\n" +
				"cpu1        draining  -              0:0/2         0\n" +
				"auto1       active    -              0:1/15(auto)  1\n" +
				"w?bad?      down      -              -             0\n",
		},
		{
			name:   "no workers",
			render: func(b *strings.Builder) error { return renderWorkers(b, nil) },
			want:   "ID  STATE  ADDRESS  GPUS  SESSIONS\n",
		},
		{
			name: "sessions",
			render: func(b *strings.Builder) error {
				return renderSessions(b, []apiv1.Session{
					{ID: "s1", State: "ready", WorkerID: "gpu-node-1", GPU: 1, Avatar: "default", CreatedAt: created},
					{ID: "s2", State: "ended", WorkerID: "cpu1", GPU: 0, Avatar: "alice", CreatedAt: created, EndedAt: &ended, EndReason: "idle_timeout"},
					{ID: "s3", State: "placing", Avatar: "default", CreatedAt: created},
				})
			},
			want: "" +
				"ID  STATE    WORKER      GPU  AVATAR   CREATED               END_REASON\n" +
				"s1  ready    gpu-node-1  1    default  2026-03-04T04:06:07Z  -\n" +
				"s2  ended    cpu1        0    alice    2026-03-04T04:06:07Z  idle_timeout\n" +
				"s3  placing  -           -    default  2026-03-04T04:06:07Z  -\n",
		},
		{
			name: "one worker",
			render: func(b *strings.Builder) error {
				return renderWorker(b, apiv1.Worker{ID: "w1", State: "active", Address: "10.0.0.5:9090", Sessions: 1,
					GPUs: []apiv1.GPU{{Index: 0, Name: "NVIDIA H100 80GB HBM3", Slots: 4, Used: 1}}})
			},
			want: "" +
				"ID:        w1\n" +
				"STATE:     active\n" +
				"ADDRESS:   10.0.0.5:9090\n" +
				"SESSIONS:  1\n" +
				"GPUS:\n" +
				"  INDEX  NAME                   USED  SLOTS\n" +
				"  0      NVIDIA H100 80GB HBM3  1     4\n",
		},
		{
			name: "worker with measured slots",
			render: func(b *strings.Builder) error {
				return renderWorker(b, apiv1.Worker{ID: "w1", State: "active", Address: "10.0.0.5:9090", Sessions: 0,
					GPUs: []apiv1.GPU{{Index: 0, Name: "cpu", Slots: 15, Capacity: &apiv1.Capacity{
						MeasuredAt: created, TookMS: 389.6, Device: "cpu", Bound: "cpu", Rule: "min(cpu: …) = 15\x1b[2J",
						Timings: []apiv1.BatchTiming{{Batch: 1, MSPerFrame: 0.5748}, {Batch: 8, MSPerFrame: 0.59}}}}}})
			},
			want: "" +
				"ID:        w1\n" +
				"STATE:     active\n" +
				"ADDRESS:   10.0.0.5:9090\n" +
				"SESSIONS:  0\n" +
				"GPUS:\n" +
				"  INDEX  NAME  USED  SLOTS\n" +
				"  0      cpu   0     15 (auto)\n" +
				"CAPACITY OF GPU 0: 15 slots, measured on cpu at 2026-03-04T04:06:07Z in 390ms (bound: cpu)\n" +
				"  ms per frame: b1 0.575, b8 0.590\n" +
				"  rule: min(cpu: …) = 15?[2J\n",
		},
		{
			name: "worker recording to a shared store",
			render: func(b *strings.Builder) error {
				return renderWorker(b, apiv1.Worker{ID: "w1", State: "active", Address: "10.0.0.5:9090", RecordingStore: "s3://minio:9000/recs/fleet"})
			},
			want: "ID:          w1\nSTATE:       active\nADDRESS:     10.0.0.5:9090\nSESSIONS:    0\nRECORDINGS:  s3://minio:9000/recs/fleet\nGPUS:      -\n",
		},
		{
			name:   "worker without GPUs",
			render: func(b *strings.Builder) error { return renderWorker(b, apiv1.Worker{ID: "w1", State: "down"}) },
			want:   "ID:        w1\nSTATE:     down\nADDRESS:   -\nSESSIONS:  0\nGPUS:      -\n",
		},
		{
			name: "one session",
			render: func(b *strings.Builder) error {
				return renderSession(b, apiv1.Session{ID: "s2", State: "ended", WorkerID: "w1", GPU: 0, Avatar: "alice",
					Voice: "en-1", Labels: map[string]string{"team": "b", "app": "demo"},
					IdleTimeoutSeconds: 120, MaxDurationSeconds: 14400, CreatedAt: created, EndedAt: &ended,
					EndReason: "error", EndMessage: "model failed", WHEPURL: "http://cp/v1/sessions/s2/whep", ViewerToken: "vt"})
			},
			want: "" +
				"ID:            s2\n" +
				"STATE:         ended\n" +
				"WORKER:        w1\n" +
				"GPU:           0\n" +
				"AVATAR:        alice\n" +
				"VOICE:         en-1\n" +
				"LABELS:        app=demo,team=b\n" +
				"IDLE_TIMEOUT:  2m0s\n" +
				"MAX_DURATION:  4h0m0s\n" +
				"CREATED:       2026-03-04T04:06:07Z\n" +
				"ENDED:         2026-03-04T04:07:37Z\n" +
				"END_REASON:    error\n" +
				"END_MESSAGE:   model failed\n" +
				"WHEP_URL:      http://cp/v1/sessions/s2/whep\n" +
				"VIEWER_TOKEN:  vt\n",
		},
		{
			name: "moved session",
			render: func(b *strings.Builder) error {
				return renderSession(b, apiv1.Session{ID: "s4", State: "ready", WorkerID: "w2", Avatar: "a", Voice: "v",
					IdleTimeoutSeconds: 120, MaxDurationSeconds: 14400, CreatedAt: created,
					RestartPolicy: "on_worker_lost", ReplaceTimeoutSeconds: 60, Moves: 1, MovedFrom: "w1", MoveReason: "worker_lost",
					WHEPURL: "http://cp/v1/sessions/s4/whep", ViewerToken: "vt"})
			},
			want: "" +
				"ID:            s4\n" +
				"STATE:         ready\n" +
				"WORKER:        w2\n" +
				"GPU:           0\n" +
				"AVATAR:        a\n" +
				"VOICE:         v\n" +
				"LABELS:        -\n" +
				"IDLE_TIMEOUT:  2m0s\n" +
				"MAX_DURATION:  4h0m0s\n" +
				"RESTART:       on_worker_lost (wait 1m0s)\n" +
				"CREATED:       2026-03-04T04:06:07Z\n" +
				"ENDED:         -\n" +
				"END_REASON:    -\n" +
				"MOVES:         1 (from w1, worker_lost)\n" +
				"WHEP_URL:      http://cp/v1/sessions/s4/whep\n" +
				"VIEWER_TOKEN:  vt\n",
		},
		{
			name: "session in a LiveKit room that reconnected",
			render: func(b *strings.Builder) error {
				two := uint32(2)
				return renderSession(b, apiv1.Session{ID: "s5", State: "ready", WorkerID: "w1", Avatar: "a", Voice: "v",
					CreatedAt: created, WHEPURL: "http://cp/v1/sessions/s5/whep", ViewerToken: "vt",
					LiveKit: &apiv1.LiveKitState{URL: "wss://lk.example", State: "joined", Reconnects: &two, LastError: "connection lost\x1b[2J"}})
			},
			want: "" +
				"ID:            s5\n" +
				"STATE:         ready\n" +
				"WORKER:        w1\n" +
				"GPU:           0\n" +
				"AVATAR:        a\n" +
				"VOICE:         v\n" +
				"LABELS:        -\n" +
				"IDLE_TIMEOUT:  -\n" +
				"MAX_DURATION:  -\n" +
				"CREATED:       2026-03-04T04:06:07Z\n" +
				"ENDED:         -\n" +
				"END_REASON:    -\n" +
				"WHEP_URL:      http://cp/v1/sessions/s5/whep\n" +
				"VIEWER_TOKEN:  vt\n" +
				"LIVEKIT:       wss://lk.example (joined, 2 reconnects, last: connection lost?[2J)\n",
		},
		{
			name: "ready session with media stats",
			render: func(b *strings.Builder) error {
				return renderSession(b, apiv1.Session{ID: "s3", State: "ready", WorkerID: "w1", Avatar: "a", Voice: "v",
					CreatedAt: created, WHEPURL: "http://cp/v1/sessions/s3/whep", ViewerToken: "vt",
					Stats: &apiv1.SessionStats{VideoFramesSent: 250, Publishers: 1, Viewers: []apiv1.ViewerStats{{ID: "v_1"}, {ID: "v_2"}}}})
			},
			want: "" +
				"ID:            s3\n" +
				"STATE:         ready\n" +
				"WORKER:        w1\n" +
				"GPU:           0\n" +
				"AVATAR:        a\n" +
				"VOICE:         v\n" +
				"LABELS:        -\n" +
				"IDLE_TIMEOUT:  -\n" +
				"MAX_DURATION:  -\n" +
				"CREATED:       2026-03-04T04:06:07Z\n" +
				"ENDED:         -\n" +
				"END_REASON:    -\n" +
				"WHEP_URL:      http://cp/v1/sessions/s3/whep\n" +
				"VIEWER_TOKEN:  vt\n" +
				"VIEWERS:       2\n" +
				"PUBLISHERS:    1\n" +
				"VIDEO_FRAMES:  250\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := tt.render(&b); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
}

func TestCell(t *testing.T) {
	for in, want := range map[string]string{"": "-", "ok": "ok", "a\tb": "a?b", "x\x1b[31m": "x?[31m", "é": "é"} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
}
