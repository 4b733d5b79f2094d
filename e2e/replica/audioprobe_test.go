package replica_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// TestAudioHeaderProbe: the control plane refuses, from the WAV header,
// audio a worker must never receive: a tiny sample rate (1 MiB claiming
// 1 Hz is 12 days of audio, and resampling it to 16 kHz took 64 GB), a
// header claiming 2^31 samples, a duration past a session's queue, more
// than two channels. The fleet's workers here accept any RIFF/WAVE body,
// so a 400 proves the control plane refused it before forwarding it.
func TestAudioHeaderProbe(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 1}}})
	s := createSession(t, f, 0, testfleet.SessionsKey)
	path := "/v1/sessions/" + s.ID + "/audio"
	ctype := []string{"Content-Type", "audio/wav"}

	// with rewrites a 16 kHz mono 16-bit file's header fields.
	with := func(n int, edit func(b []byte)) []byte {
		b := wav16(n)
		edit(b)
		return b
	}
	le := binary.LittleEndian
	eightBit := func(b []byte, rate uint32) {
		le.PutUint32(b[24:], rate)
		le.PutUint32(b[28:], rate)
		le.PutUint16(b[32:], 1)
		le.PutUint16(b[34:], 8)
	}
	tests := []struct {
		name string
		body []byte
		want string // in the message
	}{
		{"1 MiB at 1 Hz", with(1<<19, func(b []byte) { eightBit(b, 1) }), "sample rate 1 Hz"},
		{"7999 Hz", with(100, func(b []byte) { le.PutUint32(b[24:], 7999); le.PutUint32(b[28:], 2*7999) }), "sample rate 7999 Hz"},
		{"192001 Hz", with(100, func(b []byte) { le.PutUint32(b[24:], 192001); le.PutUint32(b[28:], 2*192001) }), "sample rate 192001 Hz"},
		{"header claims 2^31 samples", with(500, func(b []byte) { eightBit(b, 8000); le.PutUint32(b[40:], 1<<31) }), "limit 10m0s"},
		{"10 minutes and a sample", with(500, func(b []byte) { le.PutUint32(b[40:], 2*(16000*600+1)) }), "limit 10m0s"},
		{"3 channels", with(99, func(b []byte) { le.PutUint16(b[22:], 3); le.PutUint16(b[32:], 6) }), "3 channels"},
		{"no data chunk", with(10, func(b []byte) { copy(b[36:], "LIST") }), "no data chunk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.MustDo(0, "POST", path, testfleet.SessionsKey, tt.body, ctype...)
			var e apiv1.ErrorBody
			r.JSON(t, &e)
			if r.Status != 400 || e.Error.Code != apiv1.CodeInvalidAudio || !strings.Contains(e.Error.Message, tt.want) {
				t.Fatalf("%d %q %q, want 400 %q saying %q", r.Status, e.Error.Code, e.Error.Message, apiv1.CodeInvalidAudio, tt.want)
			}
		})
	}
	// Exactly ten minutes is a session's queue: accepted.
	ten := with(500, func(b []byte) { le.PutUint32(b[40:], 2*16000*600) })
	if r := f.MustDo(0, "POST", path, testfleet.SessionsKey, ten, ctype...); r.Status != 202 {
		t.Errorf("a header of exactly 10 minutes: %d %s, want 202", r.Status, r.Body)
	}
	if r := f.MustDo(0, "POST", path, testfleet.SessionsKey, wav16(1600), ctype...); r.Status != 202 {
		t.Errorf("a good file: %d %s", r.Status, r.Body)
	}
}
