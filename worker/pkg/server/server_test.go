package server

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	pcmwav "github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime/runtimetest"
	"github.com/avatarfleet/avatarfleet/worker/pkg/slotwatch"
)

var servers *fleettest.Servers

func TestMain(m *testing.M) { fleettest.Main(m, &servers) }

type fixture struct {
	store     *fleetstore.Store
	worker    string
	rt        *runtimetest.Holder
	client    fleetv1.WorkerServiceClient
	accepting atomic.Bool
}

// newFixture serves a worker over loopback gRPC with a Holder runtime and a
// slot watcher on the test's own etcd prefix.
func newFixture(t *testing.T, wrap func(runtime.Runtime) runtime.Runtime) *fixture {
	t.Helper()
	f := &fixture{store: servers.Store(t), worker: servers.Name(t, "w")}
	f.accepting.Store(true)
	f.rt = runtimetest.NewHolder([]*fleetv1.GPU{{Index: 0, Name: "cpu", Slots: 2, Cpu: true}}, nil)
	t.Cleanup(func() { _ = f.rt.Close(context.Background()) })
	var rt runtime.Runtime = f.rt
	if wrap != nil {
		rt = wrap(rt)
	}
	srv, err := New(Config{
		WorkerID:  f.worker,
		Runtime:   rt,
		Slots:     slotwatch.New(f.store, f.worker, nil, nil),
		Accepting: f.accepting.Load,
	})
	if err != nil {
		t.Fatal(err)
	}
	g := NewGRPC(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageBytes)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	f.client = fleetv1.NewWorkerServiceClient(conn)
	return f
}

// reserve takes a slot for id the way the control plane does and returns
// the session record to start.
func (f *fixture) reserve(t *testing.T, id string, gpu, slot uint32) *fleetv1.Session {
	t.Helper()
	sess := &fleetv1.Session{Id: id, Avatar: "default", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	_, ok, err := f.store.Reserve(t.Context(), fleetstore.Reservation{Worker: f.worker, GPU: gpu, Slot: slot}, sess)
	if err != nil || !ok {
		t.Fatalf("reserve %s: ok=%v err=%v", id, ok, err)
	}
	return sess
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code = %s (%v), want %s", got, err, want)
	}
}

// wav is a 16 kHz 16-bit mono WAV file with n bytes of data.
func wav(n int) []byte {
	b := pcmwav.Encode16(nil, 16000)
	binary.LittleEndian.PutUint32(b[40:], uint32(n))
	return append(b, make([]byte, n)...)
}

// withHeader rewrites a 16 kHz file's header: rate (as 8-bit mono when
// rate is not 16000) and declared data size.
func withHeader(b []byte, rate, dataSize uint32) []byte {
	le := binary.LittleEndian
	if rate != 16000 {
		le.PutUint32(b[24:], rate)
		le.PutUint32(b[28:], rate)
		le.PutUint16(b[32:], 1)
		le.PutUint16(b[34:], 8)
	}
	le.PutUint32(b[40:], dataSize)
	return b
}

func TestSessionLifecycle(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	sess := f.reserve(t, "sess-1", 0, 1)

	resp, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: sess})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("start state = %s", resp.GetState())
	}
	// A retried start (the control plane timed out) succeeds again.
	if _, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: sess}); err != nil {
		t.Fatalf("retried start: %v", err)
	}
	st, err := f.client.SessionStatus(ctx, &fleetv1.SessionStatusRequest{SessionId: "sess-1"})
	if err != nil || st.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
		t.Fatalf("status = %v, %v", st, err)
	}
	if st.GetLivekit() != nil {
		t.Errorf("a session without a LiveKit room has a LiveKit status: %v", st.GetLivekit())
	}
	if _, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "sess-1", Text: "héllo", Interrupt: true}); err != nil {
		t.Fatal(err)
	}
	// 5 MiB is over gRPC's default 4 MiB limit; audio must still pass.
	if _, err := f.client.PushAudio(ctx, &fleetv1.PushAudioRequest{SessionId: "sess-1", Wav: wav(5 << 20)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Interrupt(ctx, &fleetv1.InterruptRequest{SessionId: "sess-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.StopSession(ctx, &fleetv1.StopSessionRequest{SessionId: "sess-1", Reason: fleetv1.EndReason_END_REASON_DELETED}); err != nil {
		t.Fatal(err)
	}
	if got := f.rt.Sessions(); len(got) != 0 {
		t.Fatalf("sessions after stop: %v", got)
	}
	_, err = f.client.SessionStatus(ctx, &fleetv1.SessionStatusRequest{SessionId: "sess-1"})
	wantCode(t, err, codes.NotFound)
	// Stop is idempotent.
	if _, err := f.client.StopSession(ctx, &fleetv1.StopSessionRequest{SessionId: "sess-1"}); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := f.client.StopSession(ctx, &fleetv1.StopSessionRequest{SessionId: "never-existed"}); err != nil {
		t.Fatalf("stop of an unknown session: %v", err)
	}
}

func TestStartRefusals(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	held := f.reserve(t, "holder", 0, 0)
	if _, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: held}); err != nil {
		t.Fatal(err)
	}
	onGPU5 := f.reserve(t, "on-gpu5", 5, 0)

	tests := []struct {
		name string
		sess *fleetv1.Session
		want codes.Code
	}{
		{"no reservation", &fleetv1.Session{Id: "forged", WorkerId: f.worker, Gpu: 0, Slot: 1}, codes.FailedPrecondition},
		{"slot held by another session", &fleetv1.Session{Id: "thief", WorkerId: f.worker, Gpu: 0, Slot: 0}, codes.FailedPrecondition},
		{"already ended", &fleetv1.Session{Id: "holder", WorkerId: f.worker, State: fleetv1.SessionState_SESSION_STATE_ENDED}, codes.FailedPrecondition},
		{"gpu this worker lacks", onGPU5, codes.InvalidArgument},
		{"other worker", &fleetv1.Session{Id: "s", WorkerId: "someone-else"}, codes.InvalidArgument},
		{"missing session", nil, codes.InvalidArgument},
		{"empty id", &fleetv1.Session{WorkerId: f.worker}, codes.InvalidArgument},
		{"id with slash", &fleetv1.Session{Id: "a/b", WorkerId: f.worker}, codes.InvalidArgument},
		{"id with dot", &fleetv1.Session{Id: "a.b", WorkerId: f.worker}, codes.InvalidArgument},
		{"id too long", &fleetv1.Session{Id: strings.Repeat("x", 65), WorkerId: f.worker}, codes.InvalidArgument},
		{"bad avatar", &fleetv1.Session{Id: "s", WorkerId: f.worker, Avatar: "../etc"}, codes.InvalidArgument},
		{"bad voice", &fleetv1.Session{Id: "s", WorkerId: f.worker, Voice: "a b"}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: tt.sess})
			wantCode(t, err, tt.want)
		})
	}
	if got := f.rt.Sessions(); len(got) != 1 || got[0] != "holder" {
		t.Fatalf("sessions after refused starts: %v", got)
	}
}

func TestDrainingRefusesStart(t *testing.T) {
	f := newFixture(t, nil)
	sess := f.reserve(t, "late", 0, 0)
	f.accepting.Store(false)
	_, err := f.client.StartSession(t.Context(), &fleetv1.StartSessionRequest{Session: sess})
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(status.Convert(err).Message(), "draining") {
		t.Fatalf("message %q does not say draining", status.Convert(err).Message())
	}
}

func TestRequestValidation(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	sess := f.reserve(t, "live", 0, 0)
	if _, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: sess}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"speak bad id", func() error {
			_, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "", Text: "hi"})
			return err
		}, codes.InvalidArgument},
		{"speak empty text", func() error {
			_, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "live"})
			return err
		}, codes.InvalidArgument},
		{"speak text too long", func() error {
			_, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "live", Text: strings.Repeat("é", runtime.MaxTextChars+1)})
			return err
		}, codes.InvalidArgument},
		{"speak bad speech id", func() error {
			_, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "live", Text: "hi", SpeechId: "../../fleet/slots/x"})
			return err
		}, codes.InvalidArgument},
		{"speak unknown session", func() error {
			_, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "ghost", Text: "hi"})
			return err
		}, codes.NotFound},
		{"audio not wav", func() error {
			_, err := f.client.PushAudio(ctx, &fleetv1.PushAudioRequest{SessionId: "live", Wav: []byte("ID3 mp3 bytes")})
			return err
		}, codes.InvalidArgument},
		{"audio empty", func() error {
			_, err := f.client.PushAudio(ctx, &fleetv1.PushAudioRequest{SessionId: "live"})
			return err
		}, codes.InvalidArgument},
		{"audio at 1 Hz", func() error {
			_, err := f.client.PushAudio(ctx, &fleetv1.PushAudioRequest{SessionId: "live", Wav: withHeader(wav(1<<20), 1, 1<<20)})
			return err
		}, codes.InvalidArgument},
		{"audio header claims 2^31 samples", func() error {
			_, err := f.client.PushAudio(ctx, &fleetv1.PushAudioRequest{SessionId: "live", Wav: withHeader(wav(1000), 8000, 1<<31)})
			return err
		}, codes.InvalidArgument},
		{"audio unknown session", func() error {
			_, err := f.client.PushAudio(ctx, &fleetv1.PushAudioRequest{SessionId: "ghost", Wav: wav(10)})
			return err
		}, codes.NotFound},
		{"audio bad id", func() error {
			_, err := f.client.PushAudio(ctx, &fleetv1.PushAudioRequest{SessionId: "a b", Wav: wav(10)})
			return err
		}, codes.InvalidArgument},
		{"interrupt unknown", func() error {
			_, err := f.client.Interrupt(ctx, &fleetv1.InterruptRequest{SessionId: "ghost"})
			return err
		}, codes.NotFound},
		{"interrupt bad id", func() error {
			_, err := f.client.Interrupt(ctx, &fleetv1.InterruptRequest{SessionId: "*"})
			return err
		}, codes.InvalidArgument},
		{"status bad id", func() error {
			_, err := f.client.SessionStatus(ctx, &fleetv1.SessionStatusRequest{SessionId: "x>y"})
			return err
		}, codes.InvalidArgument},
		{"stop bad id", func() error {
			_, err := f.client.StopSession(ctx, &fleetv1.StopSessionRequest{SessionId: ""})
			return err
		}, codes.InvalidArgument},
		{"stop unknown reason", func() error {
			_, err := f.client.StopSession(ctx, &fleetv1.StopSessionRequest{SessionId: "live", Reason: 99})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.call(), tt.want) })
	}
	if got := f.rt.Sessions(); len(got) != 1 {
		t.Fatalf("bad requests changed the sessions: %v", got)
	}
}

func TestSlotBusyIsResourceExhausted(t *testing.T) {
	f := newFixture(t, nil)
	ctx := t.Context()
	old := f.reserve(t, "old", 0, 0)
	if _, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: old}); err != nil {
		t.Fatal(err)
	}
	// etcd freed the slot and gave it to a new session, but the old one has
	// not been stopped locally yet.
	if _, err := servers.ClientOf(f.store).Put(ctx, f.store.Keys().Slot(f.worker, 0, 0), "new"); err != nil {
		t.Fatal(err)
	}
	_, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: &fleetv1.Session{Id: "new", WorkerId: f.worker}})
	wantCode(t, err, codes.ResourceExhausted)
}

// panicky is a runtime whose Speak panics, like a broken pipeline.
type panicky struct{ runtime.Runtime }

func (panicky) Speak(context.Context, string, string, bool) error { panic("pipeline bug") }

func TestPanicBecomesInternalAndWorkerGoesOn(t *testing.T) {
	f := newFixture(t, func(rt runtime.Runtime) runtime.Runtime { return panicky{rt} })
	ctx := t.Context()
	sess := f.reserve(t, "p", 0, 0)
	if _, err := f.client.StartSession(ctx, &fleetv1.StartSessionRequest{Session: sess}); err != nil {
		t.Fatal(err)
	}
	_, err := f.client.SpeakText(ctx, &fleetv1.SpeakTextRequest{SessionId: "p", Text: "boom"})
	wantCode(t, err, codes.Internal)
	if _, err := f.client.SessionStatus(ctx, &fleetv1.SessionStatusRequest{SessionId: "p"}); err != nil {
		t.Fatalf("server unusable after a panic: %v", err)
	}
}

func TestValidSessionID(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "sess_01-AB": true, strings.Repeat("z", 64): true,
		"": false, strings.Repeat("z", 65): false, "a.b": false, "a/b": false, "ä": false, "a b": false,
	} {
		if got := ValidSessionID(id); got != want {
			t.Errorf("ValidSessionID(%q) = %v, want %v", id, got, want)
		}
	}
}
