package fleetstore_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// TestPutRecording adds and replaces recordings in a session's record,
// from concurrent writers (each compare-and-swap retried), up to the bound.
func TestPutRecording(t *testing.T) {
	s, cli := startStore(t)
	ctx := t.Context()
	lease, rev := registerWorker(t, s, cli, "w1")
	reserveSession(t, s, lease, rev, "s1", 0)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := s.PutRecording(ctx, "s1", &fleetv1.Recording{Id: fmt.Sprintf("r%d", i), State: "recording"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutRecording(ctx, "s1", &fleetv1.Recording{Id: "r3", State: "stopped", Bytes: 42}); err != nil {
		t.Fatal(err)
	}
	sess, _, err := s.Session(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if len(sess.GetRecordings()) != 8 {
		t.Fatalf("%d recordings listed, want 8", len(sess.GetRecordings()))
	}
	if r, ok := fleetstore.Recording(sess, "r3"); !ok || r.GetState() != "stopped" || r.GetBytes() != 42 {
		t.Fatalf("r3 = %v", r)
	}
	for i := 8; i < fleetstore.MaxRecordings; i++ {
		if _, err := s.PutRecording(ctx, "s1", &fleetv1.Recording{Id: fmt.Sprintf("r%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutRecording(ctx, "s1", &fleetv1.Recording{Id: "one-too-many"}); !errors.Is(err, fleetstore.ErrTooManyRecordings) {
		t.Fatalf("past the bound: %v", err)
	}
	if _, err := s.PutRecording(ctx, "nobody", &fleetv1.Recording{Id: "r"}); !errors.Is(err, fleetstore.ErrNotFound) {
		t.Fatalf("unknown session: %v", err)
	}
}
