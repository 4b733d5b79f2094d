//go:build linux

package mediae2e

import (
	"context"
	"encoding/binary"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/wav"
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
