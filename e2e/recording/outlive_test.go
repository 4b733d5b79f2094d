package recording

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
	"github.com/avatarfleet/avatarfleet/worker/pkg/recording/recordingtest"
)

// TestRecordingOutlivesItsWorker: two workers record to one bucket of a
// real MinIO server and say so in their records. A session records on one
// of them, stops the recording, starts a second one, and its worker is
// killed (kill -9). The session is re-placed on the other worker; the
// finished recording still downloads (the other worker reads it from the
// bucket) and decodes; the one that was being written is listed failed.
func TestRecordingOutlivesItsWorker(t *testing.T) {
	m := recordingtest.StartMinIO(t)
	spec := binfleet.WorkerSpec{
		Args: []string{"--recordings-s3-endpoint", m.Endpoint, "--recordings-s3-bucket", m.Bucket, "--recordings-s3-prefix", "fleet", "--prewarm", "1"},
		Env:  []string{"AVATARFLEET_RECORDINGS_S3_ACCESS_KEY=" + recordingtest.AccessKey, "AVATARFLEET_RECORDINGS_S3_SECRET_KEY=" + recordingtest.SecretKey},
	}
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{spec, spec}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var list apiv1.WorkerList
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/workers", &list); err != nil {
		t.Fatal(err)
	}
	for _, w := range list.Workers {
		if want := "s3://" + m.Endpoint[len("http://"):] + "/" + m.Bucket + "/fleet"; w.RecordingStore != want {
			t.Fatalf("worker %s advertises recording store %q, want %q", w.ID, w.RecordingStore, want)
		}
	}

	s, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recs := f.URL + "/v1/sessions/" + s.ID + "/recordings"
	var first, stopped, second apiv1.Recording
	if err := binfleet.Call(ctx, http.MethodPost, recs, f.APIKey, "", nil, http.StatusCreated, &first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the idle avatar, in real time
	if err := binfleet.Call(ctx, http.MethodDelete, recs+"/"+first.ID, f.APIKey, "", nil, http.StatusOK, &stopped); err != nil {
		t.Fatal(err)
	}
	if stopped.State != apiv1.RecordingStopped || stopped.Bytes == 0 {
		t.Fatalf("stopped %+v", stopped)
	}
	if err := binfleet.Call(ctx, http.MethodPost, recs, f.APIKey, "", nil, http.StatusCreated, &second); err != nil {
		t.Fatal(err)
	}

	writer := s.WorkerID
	f.KillWorker(t, writer)
	f.WaitUntil(t, "the session re-placed, its unfinished recording failed", 60*time.Second, func() error {
		got, err := f.GetSession(ctx, s.ID)
		if err != nil {
			return err
		}
		if got.State != apiv1.StateReady || got.WorkerID == writer {
			return fmt.Errorf("session %s on %s", got.State, got.WorkerID)
		}
		if len(got.Recordings) != 2 || got.Recordings[0].State != apiv1.RecordingStopped || got.Recordings[1].State != apiv1.RecordingFailed {
			return fmt.Errorf("recordings %+v", got.Recordings)
		}
		return nil
	})

	file := filepath.Join(t.TempDir(), "rec.webm")
	if n := download(ctx, t, recs+"/"+first.ID, f.APIKey, file); n != stopped.Bytes {
		t.Fatalf("downloaded %d bytes after its worker was killed; the recording says %d", n, stopped.Bytes)
	}
	probe(t, file, stopped.DurationSeconds)
	if err := binfleet.Call(ctx, http.MethodGet, recs+"/"+second.ID, f.APIKey, "", nil, http.StatusNotFound, nil); err != nil {
		t.Fatalf("GET of the failed recording: %v", err)
	}
	if err := binfleet.Call(ctx, http.MethodDelete, recs+"/"+second.ID, f.APIKey, "", nil, http.StatusOK, nil); err != nil {
		t.Fatalf("DELETE of the failed recording: %v", err)
	}
}
