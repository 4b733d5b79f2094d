package mediaruntime

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/recording"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// TestRecordings records a session twice: a recording stopped through the
// runtime, and one still running when the session ends, which the end
// finishes; both files are in the store, as long as their Info says.
func TestRecordings(t *testing.T) {
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	store, err := recording.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := pipeline.NewManualClock()
	r, err := New(Config{
		Devices:     []*fleetv1.GPU{{Index: 0, Slots: 1}},
		Model:       newModel(t),
		Avatar:      func(string) (*avatar.Pack, error) { return pack, nil },
		Media:       func(*fleetv1.Session, MediaHooks) (Media, error) { return &sink{}, nil },
		Clock:       func(*fleetv1.Session) pipeline.Clock { return clock },
		NoIdleShare: true,
		Recordings:  store,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close(context.Background()) }()
	ctx := context.Background()
	if err := r.Start(ctx, &fleetv1.Session{Id: "s1"}); err != nil {
		t.Fatal(err)
	}
	tick := func(n int) {
		for range n {
			select {
			case clock.Ticks() <- time.Time{}:
			case <-time.After(20 * time.Second):
				t.Fatal("tick not taken")
			}
		}
	}
	for _, tc := range []struct {
		name, session, rid string
		want               error
	}{
		{"bad id", "s1", "../x", runtime.ErrInvalidInput},
		{"no session", "s2", "r1", runtime.ErrNotFound},
	} {
		if _, err := r.StartRecording(ctx, tc.session, tc.rid); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := r.StopRecording(ctx, "s1", "never"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("stop of an unknown recording: %v", err)
	}

	first, err := r.StartRecording(ctx, "s1", "r1")
	if err != nil || first.State != recording.Recording {
		t.Fatalf("StartRecording: %+v %v", first, err)
	}
	if again, err := r.StartRecording(ctx, "s1", "r1"); err != nil || again.Started != first.Started {
		t.Fatalf("a second start of r1: %+v %v", again, err)
	}
	tick(30)
	done, err := r.StopRecording(ctx, "s1", "r1")
	if err != nil || done.State != recording.Stopped || done.VideoFrames < 25 || done.AudioPackets != 2*done.VideoFrames {
		t.Fatalf("StopRecording: %+v %v", done, err)
	}

	if _, err := r.StartRecording(ctx, "s1", "r2"); err != nil {
		t.Fatal(err)
	}
	tick(15)
	if err := r.Stop(ctx, "s1", fleetv1.EndReason_END_REASON_DELETED); err != nil {
		t.Fatal(err)
	}
	ended, err := r.StopRecording(ctx, "s1", "r2")
	if err != nil || ended.State != recording.Stopped || ended.VideoFrames < 10 {
		t.Fatalf("the recording running at the session's end: %+v %v", ended, err)
	}
	for _, info := range []recording.Info{done, ended} {
		rc, n, err := r.OpenRecording(ctx, "s1", info.Name[len("s1/"):len(info.Name)-len(".webm")])
		if err != nil {
			t.Fatalf("OpenRecording %s: %v", info.Name, err)
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil || int64(len(b)) != n || n != info.Bytes {
			t.Fatalf("%s: read %d of %d bytes, info says %d: %v", info.Name, len(b), n, info.Bytes, err)
		}
	}
	if _, _, err := r.OpenRecording(ctx, "s1", "r3"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("OpenRecording of a recording never made: %v", err)
	}
	// Both ends were reported, each once, with their final state.
	reported := map[string]*fleetv1.Recording{}
	for len(reported) < 2 {
		select {
		case e := <-r.RecordingsEnded():
			if e.SessionID != "s1" || reported[e.Recording.GetId()] != nil {
				t.Fatalf("report %+v", e)
			}
			reported[e.Recording.GetId()] = e.Recording
		case <-time.After(10 * time.Second):
			t.Fatalf("reported %v; want r1 and r2", reported)
		}
	}
	for _, info := range []recording.Info{done, ended} {
		rid := info.Name[len("s1/") : len(info.Name)-len(".webm")]
		got := reported[rid]
		if got == nil || got.GetState() != string(recording.Stopped) || got.GetBytes() != info.Bytes || got.GetStoppedAt() == nil ||
			got.GetLocation() != r.RecordingLocation("s1", rid) {
			t.Errorf("reported %s as %+v; want stopped with %d bytes", rid, got, info.Bytes)
		}
	}
}
