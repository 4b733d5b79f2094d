package replica_test

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
)

// wav16 is a minimal valid 16-bit mono WAV of n samples.
func wav16(n int) []byte {
	var b bytes.Buffer
	b.WriteString("RIFF")
	_ = binary.Write(&b, binary.LittleEndian, uint32(36+2*n))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(16000), uint32(32000), uint16(2), uint16(16)} {
		_ = binary.Write(&b, binary.LittleEndian, v) // binary.Write takes no []any
	}
	b.WriteString("data")
	_ = binary.Write(&b, binary.LittleEndian, uint32(2*n))
	b.Write(make([]byte, 2*n))
	return b.Bytes()
}

// TestBadInput: every malformed or unauthorised request gets its documented
// 4xx status and code, never a 5xx.
func TestBadInput(t *testing.T) {
	f := testfleet.Start(t, testfleet.Options{Workers: []testfleet.WorkerSpec{{ID: "w", SlotsPerGPU: 4}}})
	live := createSession(t, f, 0, testfleet.SessionsKey)
	ended := createSession(t, f, 0, testfleet.SessionsKey)
	if r := f.MustDo(0, "DELETE", "/v1/sessions/"+ended.ID, testfleet.SessionsKey, nil); r.Status != 204 {
		t.Fatalf("delete: %d", r.Status)
	}
	sess := "/v1/sessions/" + live.ID
	json := []string{"Content-Type", "application/json"}
	wav := []string{"Content-Type", "audio/wav"}
	big := `{"avatar":"` + strings.Repeat("a", 2<<20) + `"}`

	tests := []struct {
		name, method, path, key string
		body                    any
		headers                 []string
		status                  int
		code                    string
	}{
		{"no key", "GET", "/v1/sessions", "", nil, nil, 401, apiv1.CodeUnauthorized},
		{"wrong key", "GET", "/v1/sessions", "not-a-key-of-this-fleet", nil, nil, 401, apiv1.CodeUnauthorized},
		{"sessions key on admin route", "GET", "/v1/workers", testfleet.SessionsKey, nil, nil, 403, apiv1.CodeForbidden},
		{"sessions key drains", "POST", "/v1/workers/w/drain", testfleet.SessionsKey, nil, nil, 403, apiv1.CodeForbidden},
		{"malformed JSON", "POST", "/v1/sessions", testfleet.SessionsKey, `{"avatar":`, json, 400, apiv1.CodeInvalidRequest},
		{"not an object", "POST", "/v1/sessions", testfleet.SessionsKey, `[1,2]`, json, 400, apiv1.CodeInvalidRequest},
		{"two objects", "POST", "/v1/sessions", testfleet.SessionsKey, `{}{}`, json, 400, apiv1.CodeInvalidRequest},
		{"unknown field", "POST", "/v1/sessions", testfleet.SessionsKey, `{"avatarr":"x"}`, json, 400, apiv1.CodeInvalidRequest},
		{"wrong type", "POST", "/v1/sessions", testfleet.SessionsKey, `{"idle_timeout_seconds":"60"}`, json, 400, apiv1.CodeInvalidRequest},
		{"fractional timeout", "POST", "/v1/sessions", testfleet.SessionsKey, `{"idle_timeout_seconds":60.5}`, json, 400, apiv1.CodeInvalidRequest},
		{"idle timeout too short", "POST", "/v1/sessions", testfleet.SessionsKey, `{"idle_timeout_seconds":4}`, json, 400, apiv1.CodeInvalidRequest},
		{"max duration too long", "POST", "/v1/sessions", testfleet.SessionsKey, `{"max_duration_seconds":86401}`, json, 400, apiv1.CodeInvalidRequest},
		{"bad avatar name", "POST", "/v1/sessions", testfleet.SessionsKey, `{"avatar":"../etc"}`, json, 400, apiv1.CodeInvalidRequest},
		{"unknown avatar", "POST", "/v1/sessions", testfleet.SessionsKey, `{"avatar":"nobody"}`, json, 400, apiv1.CodeUnknownAvatar},
		{"unknown voice", "POST", "/v1/sessions", testfleet.SessionsKey, `{"voice":"klingon"}`, json, 400, apiv1.CodeUnknownVoice},
		{"bad label", "POST", "/v1/sessions", testfleet.SessionsKey, `{"labels":{"a b":"c"}}`, json, 400, apiv1.CodeInvalidRequest},
		{"bad idempotency key", "POST", "/v1/sessions", testfleet.SessionsKey, `{}`, []string{"Content-Type", "application/json", "Idempotency-Key", "has space"}, 400, apiv1.CodeInvalidRequest},
		{"oversized body", "POST", "/v1/sessions", testfleet.SessionsKey, big, json, 413, apiv1.CodePayloadTooLarge},
		{"form body", "POST", "/v1/sessions", testfleet.SessionsKey, `a=b`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, apiv1.CodeUnsupportedMediaType},
		{"unknown session", "GET", "/v1/sessions/sess_000000000000000000000000", testfleet.SessionsKey, nil, nil, 404, apiv1.CodeNotFound},
		{"malformed session id", "GET", "/v1/sessions/..%2f..", testfleet.SessionsKey, nil, nil, 404, apiv1.CodeNotFound},
		{"delete never-existed", "DELETE", "/v1/sessions/sess_nope", testfleet.SessionsKey, nil, nil, 404, apiv1.CodeNotFound},
		{"another key's session", "GET", sess, testfleet.OtherKey, nil, nil, 404, apiv1.CodeNotFound},
		{"unknown worker", "GET", "/v1/workers/nope", testfleet.AdminKey, nil, nil, 404, apiv1.CodeNotFound},
		{"drain unknown worker", "POST", "/v1/workers/nope/drain", testfleet.AdminKey, nil, nil, 404, apiv1.CodeNotFound},
		{"empty speech", "POST", sess + "/speak", testfleet.SessionsKey, `{"text":""}`, json, 400, apiv1.CodeInvalidRequest},
		{"speech too long", "POST", sess + "/speak", testfleet.SessionsKey, `{"text":"` + strings.Repeat("é", 10001) + `"}`, json, 400, apiv1.CodeInvalidRequest},
		{"speech without text", "POST", sess + "/speak", testfleet.SessionsKey, `{"interrupt":true}`, json, 400, apiv1.CodeInvalidRequest},
		{"speak to ended session", "POST", "/v1/sessions/" + ended.ID + "/speak", testfleet.SessionsKey, `{"text":"hi"}`, json, 409, apiv1.CodeSessionNotReady},
		{"audio not wav", "POST", sess + "/audio", testfleet.SessionsKey, "ID3 not a wave file at all, not even close to one", wav, 400, apiv1.CodeInvalidAudio},
		{"audio wrong type", "POST", sess + "/audio", testfleet.SessionsKey, wav16(100), []string{"Content-Type", "audio/mpeg"}, 415, apiv1.CodeUnsupportedMediaType},
		{"audio too large", "POST", sess + "/audio", testfleet.SessionsKey, append(wav16(10), make([]byte, 50<<20)...), wav, 413, apiv1.CodePayloadTooLarge},
		{"interrupt ended session", "POST", "/v1/sessions/" + ended.ID + "/interrupt", testfleet.SessionsKey, nil, nil, 409, apiv1.CodeSessionNotReady},
		{"wrong method", "PUT", "/v1/sessions", testfleet.SessionsKey, nil, nil, 405, apiv1.CodeMethodNotAllowed},
		{"unknown route", "GET", "/v1/nothing", testfleet.SessionsKey, nil, nil, 404, apiv1.CodeNotFound},
		{"bad Last-Event-ID", "GET", "/v1/events", testfleet.SessionsKey, nil, []string{"Last-Event-ID", "yesterday"}, 400, apiv1.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.MustDo(0, tt.method, tt.path, tt.key, tt.body, tt.headers...)
			var e apiv1.ErrorBody
			r.JSON(t, &e)
			if r.Status != tt.status || e.Error.Code != tt.code {
				t.Fatalf("%s %s: %d %q (%s), want %d %q", tt.method, tt.path, r.Status, e.Error.Code, e.Error.Message, tt.status, tt.code)
			}
			if e.Error.Message == "" {
				t.Error("error without a message")
			}
		})
	}

	// The good forms of the same routes work.
	good := []struct {
		name, method, path string
		body               any
		headers            []string
		status             int
	}{
		{"speak", "POST", sess + "/speak", `{"text":"hello"}`, json, 202},
		{"audio", "POST", sess + "/audio", wav16(1600), wav, 202},
		{"interrupt", "POST", sess + "/interrupt", nil, nil, 204},
		{"list", "GET", "/v1/sessions", nil, nil, 200},
	}
	for _, tt := range good {
		if r := f.MustDo(0, tt.method, tt.path, testfleet.SessionsKey, tt.body, tt.headers...); r.Status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, r.Status, r.Body, tt.status)
		}
	}
	// The other key's list does not show this key's sessions.
	var list apiv1.SessionList
	f.MustDo(0, "GET", "/v1/sessions", testfleet.OtherKey, nil).JSON(t, &list)
	if len(list.Sessions) != 0 {
		t.Errorf("another key lists %d sessions it does not own", len(list.Sessions))
	}
}
