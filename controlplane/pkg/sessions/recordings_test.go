package sessions

import (
	"errors"
	"io"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// FetchRecording of the test workers streams "file from <worker id>".
func (w *speechWorker) FetchRecording(_ *fleetv1.RecordingRequest, stream fleetv1.WorkerService_FetchRecordingServer) error {
	body := []byte("file from " + w.id)
	return stream.Send(&fleetv1.RecordingChunk{Data: body, Size: int64(len(body))})
}

// TestFetchRecordingOutlivesItsWorker: a finished recording is read from
// the worker that wrote it while that worker is registered; once it is
// gone, from a registered worker that advertises the shared store the
// file went to; with no such worker, or a file on the gone worker's own
// disk, the fetch is unavailable. A failed recording has no file.
func TestFetchRecordingOutlivesItsWorker(t *testing.T) {
	f := newSpeechFixture(t)
	ctx := t.Context()
	const bucket = "s3://minio.local/recordings/fleet"
	startSpeechWorker(ctx, t, f.store, "w2", func(w *fleetv1.Worker) { w.RecordingStore = "s3://minio.local/recordings/other" })
	startSpeechWorker(ctx, t, f.store, "w3", func(w *fleetv1.Worker) { w.RecordingStore = bucket })
	deadline := time.Now().Add(10 * time.Second)
	for len(f.reg.Workers()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the registry never saw w2 and w3")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cases := []struct {
		rec      *fleetv1.Recording
		wantFrom string // "" when unavailable
	}{
		{&fleetv1.Recording{Id: "rec_writer_here", WorkerId: "w2", Store: bucket}, "w2"},
		{&fleetv1.Recording{Id: "rec_writer_gone", WorkerId: "gone", Store: bucket}, "w3"},
		{&fleetv1.Recording{Id: "rec_own_disk", WorkerId: "gone"}, ""},
		{&fleetv1.Recording{Id: "rec_unknown_store", WorkerId: "gone", Store: "s3://elsewhere/b"}, ""},
	}
	for _, tc := range cases {
		tc.rec.State = fleetstore.RecordingStopped
		if _, err := f.store.PutRecording(ctx, "s1", tc.rec); err != nil {
			t.Fatal(err)
		}
	}
	failed := &fleetv1.Recording{Id: "rec_failed", WorkerId: "w2", Store: bucket, State: fleetstore.RecordingFailed, Error: "its worker was lost"}
	if _, err := f.store.PutRecording(ctx, "s1", failed); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.m.FetchRecording(ctx, "s1", "rec_failed"); !errors.Is(err, ErrRecordingFailed) {
		t.Errorf("fetch of a failed recording: %v, want ErrRecordingFailed", err)
	}
	// Stopping an ended recording answers it as it is, its worker gone or not.
	for _, rid := range []string{"rec_failed", "rec_own_disk"} {
		if rec, err := f.m.StopRecording(ctx, "s1", rid); err != nil || rec.GetId() != rid {
			t.Errorf("stop of ended recording %s: %v, %v", rid, rec, err)
		}
	}
	for _, tc := range cases {
		rc, _, err := f.m.FetchRecording(ctx, "s1", tc.rec.GetId())
		if tc.wantFrom == "" {
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: %v, want ErrUnavailable", tc.rec.GetId(), err)
			}
			if rc != nil {
				rc.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.rec.GetId(), err)
			continue
		}
		body, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(body) != "file from "+tc.wantFrom {
			t.Errorf("%s: read %q (%v), want the file from %s", tc.rec.GetId(), body, err, tc.wantFrom)
		}
	}
}
