//go:build linux

package slotsauto

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/binfleet"
)

// TestSlotsPerGPUAuto starts bin/worker --gpus cpu --slots-per-gpu auto
// under bin/controlplane: GET /v1/workers/{id} (and the list) show the
// measured count with its measurement (device, batch sizes 1, 2, 4, 8, the
// rule that gives exactly that count), and creating sessions fills exactly
// that many slots: the next create gets 503 no_capacity, and deleting one
// frees a place again.
func TestSlotsPerGPUAuto(t *testing.T) {
	f := binfleet.Start(t, binfleet.Options{Workers: []binfleet.WorkerSpec{{
		ID:   "auto-worker",
		Args: []string{"--slots-per-gpu", "auto", "--prewarm", "0"},
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var w apiv1.Worker
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/workers/auto-worker", &w); err != nil {
		t.Fatal(err)
	}
	if len(w.GPUs) != 1 {
		t.Fatalf("worker %+v: want one device", w)
	}
	g := w.GPUs[0]
	c := g.Capacity
	if c == nil {
		t.Fatalf("device %+v has no capacity record", g)
	}
	slots := int(g.Slots)
	if slots < 1 || slots > 256 {
		t.Fatalf("slots %d", slots)
	}
	if c.Device != "cpu" || c.Batch != 1 || c.Bound == "" || c.CPUThreads < 1 || c.Utilisation <= 0 || c.PipelineCPUMS <= 0 ||
		time.Since(c.MeasuredAt) > 10*time.Minute || time.Since(c.MeasuredAt) < 0 || c.TookMS <= 0 ||
		!strings.Contains(c.Rule, "= "+strconv.Itoa(slots)+" ") {
		t.Errorf("capacity %+v (slots %d)", c, slots)
	}
	var batches []uint32
	for _, bt := range c.Timings {
		if bt.MSPerFrame <= 0 {
			t.Errorf("timing %+v", bt)
		}
		batches = append(batches, bt.Batch)
	}
	if fmt.Sprint(batches) != "[1 2 4 8]" {
		t.Errorf("timed batches %v, want [1 2 4 8]", batches)
	}
	// The count follows from the measurement by the documented rule.
	want := int(float64(c.CPUThreads) * 40 * c.Utilisation / (c.Timings[0].MSPerFrame + c.PipelineCPUMS))
	if want = max(1, min(256, want)); want != slots {
		t.Errorf("slots %d, but the rule on the advertised measurement gives %d", slots, want)
	}
	var list apiv1.WorkerList
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/workers", &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Workers) != 1 || len(list.Workers[0].GPUs) != 1 || list.Workers[0].GPUs[0].Slots != g.Slots ||
		list.Workers[0].GPUs[0].Capacity == nil || list.Workers[0].GPUs[0].Capacity.Rule != c.Rule {
		t.Errorf("GET /v1/workers = %+v", list)
	}
	t.Logf("auto slots: %d (%s); %s", slots, c.Bound, c.Rule)

	// Placement fills exactly the measured slots.
	ids := make([]string, 0, slots)
	for i := range slots {
		s, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
		if err != nil {
			t.Fatalf("create %d of %d: %v", i+1, slots, err)
		}
		if s.WorkerID != "auto-worker" || s.GPU != 0 {
			t.Fatalf("session %+v", s)
		}
		ids = append(ids, s.ID)
	}
	assertFull := func() {
		t.Helper()
		_, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
		if err == nil || !strings.Contains(err.Error(), strconv.Itoa(http.StatusServiceUnavailable)) || !strings.Contains(err.Error(), apiv1.CodeNoCapacity) {
			t.Fatalf("create past %d slots: %v, want 503 no_capacity", slots, err)
		}
	}
	assertFull()
	if err := binfleet.APIGet(ctx, f.URL, f.APIKey, "/v1/workers/auto-worker", &w); err != nil {
		t.Fatal(err)
	}
	if w.GPUs[0].Used != uint32(slots) || w.Sessions != slots {
		t.Errorf("worker after filling: used %d, sessions %d, want %d", w.GPUs[0].Used, w.Sessions, slots)
	}
	// Deleting one frees exactly one place.
	if err := f.DeleteSession(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	f.WaitUntil(t, "a slot freed", time.Minute, func() error {
		s, err := f.CreateSession(ctx, apiv1.CreateSessionRequest{})
		if err != nil {
			return err
		}
		ids[0] = s.ID
		return nil
	})
	assertFull()
	var errs []error
	for _, id := range ids {
		errs = append(errs, f.DeleteSession(ctx, id))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
