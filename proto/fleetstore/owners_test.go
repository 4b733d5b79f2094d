package fleetstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func reserveFor(ctx context.Context, s *fleetstore.Store, lease clientv3.LeaseID, rev int64, owner, id string, slot uint32, limit int) (bool, error) {
	sess := &fleetv1.Session{Id: id, Owner: owner, State: fleetv1.SessionState_SESSION_STATE_STARTING}
	_, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev, GPU: 0, Slot: slot, OwnerLimit: limit}, sess)
	return ok, err
}

// Many concurrent reservations of one owner, each on its own free slot,
// never leave the owner with more live sessions than its limit; ending one
// frees a place.
func TestReserveHoldsOwnerQuotaUnderContention(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease, rev := registerWorker(t, s, cli, "w1")
	const limit, racers = 5, 40
	var wins, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			ok, err := reserveFor(ctx, s, lease, rev, "ownerA", fmt.Sprintf("s%02d", i), uint32(i), limit)
			switch {
			case errors.Is(err, fleetstore.ErrQuotaExceeded):
				refused.Add(1)
			case err != nil:
				t.Error(err)
			case ok:
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != limit {
		t.Fatalf("%d reservations won, want exactly %d (limit); %d refused for quota", wins.Load(), limit, refused.Load())
	}
	if n, err := s.LiveSessions(ctx, "ownerA"); err != nil || n != limit {
		t.Fatalf("live sessions = %d, %v; want %d", n, err, limit)
	}
	// Another owner is not affected.
	if ok, err := reserveFor(ctx, s, lease, rev, "ownerB", "other", 100, limit); err != nil || !ok {
		t.Fatalf("other owner's reservation: ok=%v err=%v", ok, err)
	}
	// End one of ownerA's: the next reservation fits again, and only one.
	page, err := s.OwnerSessionsPage(ctx, "ownerA", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, ended, err := s.EndSession(ctx, page.Sessions[0].Session.GetId(), fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, ""); err != nil || !ended {
		t.Fatalf("end session: ended=%v err=%v", ended, err)
	}
	if ok, err := reserveFor(ctx, s, lease, rev, "ownerA", "again", 200, limit); err != nil || !ok {
		t.Fatalf("reservation after an end: ok=%v err=%v", ok, err)
	}
	if _, err := reserveFor(ctx, s, lease, rev, "ownerA", "over", 201, limit); !errors.Is(err, fleetstore.ErrQuotaExceeded) {
		t.Fatalf("reservation over the limit: err=%v, want ErrQuotaExceeded", err)
	}
	// The ended session stays in the index (listed) until its record expires.
	page, err = s.OwnerSessionsPage(ctx, "ownerA", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Sessions) != limit+1 {
		t.Fatalf("index lists %d sessions of ownerA, want %d", len(page.Sessions), limit+1)
	}
}

// Unreserve and record expiry take the index entry and the live mark along.
func TestOwnerIndexFollowsRecord(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease, rev := registerWorker(t, s, cli, "w1")
	sess := &fleetv1.Session{Id: "s1", Owner: "o1", State: fleetv1.SessionState_SESSION_STATE_STARTING}
	srev, ok, err := s.Reserve(ctx, fleetstore.Reservation{Worker: "w1", WorkerLease: lease, WorkerRevision: rev, OwnerLimit: 1}, sess)
	if err != nil || !ok {
		t.Fatalf("reserve: ok=%v err=%v", ok, err)
	}
	if err := s.Unreserve(ctx, sess, srev); err != nil {
		t.Fatal(err)
	}
	if ok, err := reserveFor(ctx, s, lease, rev, "o1", "s2", 1, 1); err != nil || !ok {
		t.Fatalf("reserve after unreserve: ok=%v err=%v", ok, err)
	}
	ended, _, err := s.EndSession(ctx, "s2", fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, "")
	if err != nil {
		t.Fatal(err)
	}
	_, erev, err := s.Session(ctx, ended.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSessionRecord(ctx, "s2", erev); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/test/owners/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("%d per-owner keys left after unreserve and expiry, want 0", resp.Count)
	}
}

// Paging through 1,000 sessions of two owners gives each owner all of its
// own sessions once, none of the other's, while sessions are being created.
func TestOwnerSessionsPagination(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	lease, rev := registerWorker(t, s, cli, "w1")
	owners := []string{"alice", "bob"}
	want := map[string]map[string]bool{"alice": {}, "bob": {}}
	var slot atomic.Uint32
	for i := range 1000 {
		o := owners[i%2]
		id := fmt.Sprintf("sess_%08x", uint32(i)*2654435761) // ids in no creation order
		if ok, err := reserveFor(ctx, s, lease, rev, o, id, slot.Add(1), 0); err != nil || !ok {
			t.Fatalf("reserve %d: ok=%v err=%v", i, ok, err)
		}
		want[o][id] = true
	}
	// Keep creating while the owners page.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := reserveFor(ctx, s, lease, rev, owners[i%2], fmt.Sprintf("late_%d", i), slot.Add(1), 0); err != nil {
				t.Error(err)
				return
			}
		}
	})
	defer wg.Wait()
	defer close(stop)
	for _, o := range owners {
		seen := map[string]bool{}
		after, pages := "", 0
		for {
			page, err := s.OwnerSessionsPage(ctx, o, after, 37)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, e := range page.Sessions {
				id := e.Session.GetId()
				if e.Session.GetOwner() != o {
					t.Fatalf("owner %s was listed %s of %s", o, id, e.Session.GetOwner())
				}
				if seen[id] {
					t.Fatalf("owner %s: %s listed twice", o, id)
				}
				if id <= after {
					t.Fatalf("owner %s: %s listed after cursor %s (not in order)", o, id, after)
				}
				seen[id] = true
			}
			if !page.More {
				break
			}
			after = page.Last
		}
		for id := range want[o] {
			if !seen[id] {
				t.Fatalf("owner %s: %s missing from the listing", o, id)
			}
		}
		if pages < 500/37 {
			t.Fatalf("owner %s: %d pages, want at least %d", o, pages, 500/37)
		}
	}
	// The fleet-wide range read pages too (admin).
	total, after := 0, ""
	for {
		page, err := s.SessionsPage(ctx, after, 250)
		if err != nil {
			t.Fatal(err)
		}
		total += len(page.Sessions)
		if !page.More {
			break
		}
		after = page.Last
	}
	if total < 1000 {
		t.Fatalf("fleet listing saw %d sessions, want at least 1000", total)
	}
}

// Releasing an idempotency key revokes its lease: 200 failed placements
// leave the lease count where it was.
func TestIdempotencyLeasesRevokedOnRelease(t *testing.T) {
	s, cli := startStore(t)
	ctx := context.Background()
	before, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		key, id := fmt.Sprintf("k%d", i), fmt.Sprintf("sess_%d|h", i)
		bound, claimed, err := s.ClaimIdempotencyKey(ctx, "o1", key, id, 24*time.Hour)
		if err != nil || !claimed || bound != id {
			t.Fatalf("claim %d: bound=%q claimed=%v err=%v", i, bound, claimed, err)
		}
		if err := s.ReleaseIdempotencyKey(ctx, "o1", key, id); err != nil {
			t.Fatal(err)
		}
	}
	after, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Leases) != len(before.Leases) {
		t.Fatalf("%d leases after 200 released claims, want %d (as before)", len(after.Leases), len(before.Leases))
	}
}
