package fleetstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// TestWatchFrom: changes come one revision at a time, in order, from the
// revision after the one asked; a compacted start is reported, never
// skipped over; listings at a revision see the past, and refuse the
// compacted past and the future.
func TestWatchFrom(t *testing.T) {
	store, cli := startStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(k, v string) int64 {
		resp, err := cli.Put(ctx, "/wf/"+k, v)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	first := put("a", "1")
	put("b", "1")
	put("a", "2")

	kvs, _, err := store.ListAt(ctx, []string{"/wf/"}, first)
	if err != nil || len(kvs) != 1 || string(kvs[0].Value) != "1" {
		t.Fatalf("listing at %d: %v %v", first, kvs, err)
	}
	if _, _, err := store.ListAt(ctx, []string{"/wf/"}, first+1000); !errors.Is(err, fleetstore.ErrFutureRevision) {
		t.Fatalf("listing in the future: %v", err)
	}

	var (
		mu  sync.Mutex
		got []string
	)
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- store.WatchFrom(wctx, fleetstore.WatchFromOptions{Prefix: "/wf/", After: first}, func(_ context.Context, rev int64, evs []fleetstore.Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range evs {
				got = append(got, fmt.Sprintf("%d %s=%s", rev, e.KV.Key, e.KV.Value))
			}
		})
	}()
	last := put("c", "1")
	want := fmt.Sprint([]string{
		fmt.Sprintf("%d /wf/b=1", first+1), fmt.Sprintf("%d /wf/a=2", first+2), fmt.Sprintf("%d /wf/c=1", last),
	})
	waitFor(t, "the changes after the start", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprint(got) == want
	})
	wcancel()
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v", err)
	}

	if _, err := cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	err = store.WatchFrom(ctx, fleetstore.WatchFromOptions{Prefix: "/wf/", After: first}, func(context.Context, int64, []fleetstore.Event) {
		t.Error("a change from compacted history")
	})
	if !errors.Is(err, fleetstore.ErrCompacted) {
		t.Fatalf("watch from compacted history: %v", err)
	}
	if _, _, err := store.ListAt(ctx, []string{"/wf/"}, first); !errors.Is(err, fleetstore.ErrCompacted) {
		t.Fatalf("listing compacted history: %v", err)
	}
}
