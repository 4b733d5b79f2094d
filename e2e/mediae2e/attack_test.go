//go:build linux

package mediae2e

import (
	"context"
	"encoding/binary"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/proto/wav"
)

// TestHostileAudio is issue 8's attack on the built binaries: a 1 MB 8-bit
// WAV whose header says 1 Hz (resampling it to 16 kHz took 64 GB and killed
// the worker, failing every session on it) and a header claiming 2^31
// samples, POSTed to a session's /audio. Both get 400 invalid_audio; the
// worker lives; the attacked session and a watched one on the same worker
// stay ready, and the watched one keeps 25 fps.
func TestHostileAudio(t *testing.T) {
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{SlotsPerGPU: 2}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	watched := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	attacked := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	v := dial(ctx, t, f, watched)
	firstFrame(ctx, t, v)

	oneHz := eightBit(1, 1<<20, 0)
	claims := eightBit(8000, 1000, 1<<31)
	for _, c := range []struct {
		name string
		body []byte
		want string
	}{
		{"1 MB at 1 Hz", oneHz, "sample rate 1 Hz"},
		{"header claims 2^31 samples", claims, "limit 10m0s"},
	} {
		var e apiv1.ErrorBody
		err := binfleet.Call(ctx, http.MethodPost, f.URL+"/v1/sessions/"+attacked.ID+"/audio", f.APIKey, "audio/wav", c.body, http.StatusBadRequest, &e)
		if err != nil || e.Error.Code != apiv1.CodeInvalidAudio || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%s: %v %+v, want 400 %s saying %q", c.name, err, e.Error, apiv1.CodeInvalidAudio, c.want)
		}
	}

	fps, pps := rates(v, 3*time.Second)
	t.Logf("watched session after the attack: %.1f fps, %.1f Opus packets/s", fps, pps)
	if fps < minFPS || fps > maxFPS {
		t.Errorf("watched session: %.1f video frames/s after the attack, want %d..%d (25 fps)", fps, minFPS, maxFPS)
	}
	if err := f.Alive(); err != nil {
		t.Fatalf("after the attack: %v", err)
	}
	for _, id := range []string{watched.ID, attacked.ID} {
		s, err := f.GetSession(ctx, id)
		if err != nil || s.State != apiv1.StateReady {
			t.Errorf("session %s after the attack: %s %s %s, %v", id, s.State, s.EndReason, s.EndMessage, err)
		}
	}
	// The attacked session still takes good audio.
	if err := f.PostAudio(ctx, attacked.ID, tone(0.5)); err != nil {
		t.Errorf("a good file after the attack: %v", err)
	}
	if err := v.Err(); err != nil {
		t.Errorf("viewer: %v", err)
	}
}

// eightBit is n bytes of 8-bit mono audio whose header says rate Hz and,
// when dataSize is not 0, that many bytes of data.
func eightBit(rate uint32, n int, dataSize uint32) []byte {
	b := wav.Encode16(nil, 8000)
	le := binary.LittleEndian
	le.PutUint32(b[24:], rate)
	le.PutUint32(b[28:], rate)
	le.PutUint16(b[32:], 1)
	le.PutUint16(b[34:], 8)
	if dataSize == 0 {
		dataSize = uint32(n)
	}
	le.PutUint32(b[40:], dataSize)
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(128 + i%64)
	}
	return append(b, data...)
}

// TestGreedySessionShed runs a worker with --memory-limit 256MiB: its
// sessions may queue 64 MiB of input together. Two sessions each upload
// ten minutes of (silent) speech, 38.4 MB queued apiece: the second upload
// does not fit, so the worker sheds the session holding the most input —
// it fails with reason error, saying it was shed — and takes the second.
// The worker and the second session go on.
func TestGreedySessionShed(t *testing.T) {
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{SlotsPerGPU: 2, Args: []string{"--memory-limit", "256MiB"}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	greedy := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	other := createReady(ctx, t, f, apiv1.CreateSessionRequest{})
	tenMinutes := wav.Encode16(make([]float32, 16000*600), 16000)
	if err := f.PostAudio(ctx, greedy.ID, tenMinutes); err != nil {
		t.Fatal(err)
	}
	if err := f.PostAudio(ctx, other.ID, tenMinutes); err != nil {
		t.Fatalf("the second upload: %v, want it taken after the greedy session is shed", err)
	}
	s := waitEnded(ctx, t, f, greedy.ID, 30*time.Second)
	t.Logf("greedy session: %s %s: %s", s.State, s.EndReason, s.EndMessage)
	if s.State != apiv1.StateFailed || s.EndReason != apiv1.ReasonError || !strings.Contains(s.EndMessage, "session shed") {
		t.Errorf("greedy session ended %s/%s %q, want failed/error saying it was shed", s.State, s.EndReason, s.EndMessage)
	}
	if err := f.Alive(); err != nil {
		t.Fatal(err)
	}
	if s, err := f.GetSession(ctx, other.ID); err != nil || s.State != apiv1.StateReady {
		t.Errorf("the other session: %+v, %v", s, err)
	}
}
