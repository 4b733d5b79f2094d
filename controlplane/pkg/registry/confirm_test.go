package registry

import (
	"context"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/proto/embedded/embeddedtest"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// TestConfirmSlots: a cache whose watch brought nothing since its listing
// (no Run here: the watch is silent) takes the slot use from a fresh read
// of etcd; a late watch event the read already holds does not undo it;
// reads are at most one per confirmEvery; an event after the read applies.
func TestConfirmSlots(t *testing.T) {
	ctx := context.Background()
	_, cli := embeddedtest.Etcd(t)
	store := fleetstore.New(cli, fleetstore.NewKeys("/confirm/"))
	keys := store.Keys()
	if err := store.PutWorker(ctx, &fleetv1.Worker{Id: "w1", State: fleetv1.WorkerState_WORKER_STATE_ACTIVE,
		Gpus: []*fleetv1.GPU{{Index: 0, Slots: 2}}}, clientv3.NoLease); err != nil {
		t.Fatal(err)
	}
	for s, id := range []string{"a", "b"} {
		if _, err := cli.Put(ctx, keys.Slot("w1", 0, uint32(s)), id); err != nil {
			t.Fatal(err)
		}
	}
	r := New(store, slog.New(slog.DiscardHandler))
	kvs, rev, err := store.ListAt(ctx, []string{keys.Fleet()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.replace(ctx, kvs, rev)
	if v, _ := r.Worker("w1"); v.Sessions != 2 {
		t.Fatalf("listed %d sessions, want 2", v.Sessions)
	}

	// Another replica frees slot 1; this cache's watch says nothing.
	del, err := cli.Delete(ctx, keys.Slot("w1", 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := r.ConfirmSlots(ctx)
	if err != nil || !fresh {
		t.Fatalf("ConfirmSlots = %v, %v; want a fresh read", fresh, err)
	}
	if s, ok := r.FreeSlot("w1", 0, 2, 0, func(uint32) bool { return false }); !ok || s != 1 {
		t.Fatalf("after the read FreeSlot = %d, %v; want slot 1", s, ok)
	}
	// The watch catches up late with the put of slot 1 (before the read):
	// already known, skipped.
	r.apply(ctx, []fleetstore.Event{{Type: fleetstore.EventPut, KV: fleetstore.KV{Key: keys.Slot("w1", 0, 1), Value: []byte("b"), ModRevision: rev}}}, rev)
	if v, _ := r.Worker("w1"); v.Sessions != 1 {
		t.Fatalf("a late event the read held marked the slot again: %d sessions", v.Sessions)
	}
	// A second ask right away shares the first read.
	if fresh, err := r.ConfirmSlots(ctx); err != nil || fresh {
		t.Fatalf("second ConfirmSlots within %s = %v, %v; want no read", confirmEvery, fresh, err)
	}
	// An event after the read applies.
	put, err := cli.Put(ctx, keys.Slot("w1", 0, 1), "c")
	if err != nil {
		t.Fatal(err)
	}
	r.apply(ctx, []fleetstore.Event{
		{Type: fleetstore.EventDelete, KV: fleetstore.KV{Key: keys.Slot("w1", 0, 1), ModRevision: del.Header.Revision}},
		{Type: fleetstore.EventPut, KV: fleetstore.KV{Key: keys.Slot("w1", 0, 1), Value: []byte("c"), ModRevision: put.Header.Revision}},
	}, put.Header.Revision)
	if v, _ := r.Worker("w1"); v.Sessions != 2 {
		t.Fatalf("the reservation after the read: %d sessions, want 2", v.Sessions)
	}
	// Once the cache is as new as etcd, a read changes nothing.
	time.Sleep(confirmEvery)
	if fresh, err := r.ConfirmSlots(ctx); err != nil || fresh {
		t.Fatalf("ConfirmSlots on an up-to-date cache = %v, %v; want no change", fresh, err)
	}
}
