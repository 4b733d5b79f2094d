package sessions

import (
	"context"
	"errors"
	"testing"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

// TestOwnReleasesFreeSlotsInAStaleView: with the registry's watch silent
// (after an etcd leader's loss it can be for seconds), the slots this
// replica freed itself (deletes, reservations undone after a refused
// start) are free for its next creates. Before, each create marked a slot
// used in the cache and each delete left it so until the watch reported
// it: two create-delete rounds filled a two-slot fleet, and creates were
// answered no_capacity with every slot free.
func TestOwnReleasesFreeSlotsInAStaleView(t *testing.T) {
	ctx := context.Background()
	t.Run("delete", func(t *testing.T) {
		fx := newFixture(quiet())
		fx.fleet.add("w1", 2)
		fx.fleet.blind = true
		for i := range 6 {
			sess, err := fx.m.Create(ctx, CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"})
			if err != nil {
				t.Fatalf("create %d (after %d deletes): %v", i, i, err)
			}
			if _, err := fx.m.Delete(ctx, sess.GetId()); err != nil {
				t.Fatalf("delete %d: %v", i, err)
			}
		}
	})
	t.Run("refused start", func(t *testing.T) {
		fx := newFixture(quiet())
		fx.fleet.add("w1", 1)
		fx.fleet.add("w2", 1)
		fx.fleet.blind = true
		fx.workers.refuse["w1"] = true
		for i := range 3 {
			// w1 refuses and its reservation is undone; w2 takes it.
			sess, err := fx.m.Create(ctx, CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"})
			if err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
			if _, err := fx.m.Delete(ctx, sess.GetId()); err != nil {
				t.Fatalf("delete %d: %v", i, err)
			}
		}
		fx.workers.mu.Lock()
		delete(fx.workers.refuse, "w1")
		fx.workers.mu.Unlock()
		if _, err := fx.m.Create(ctx, CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"}); err != nil {
			t.Fatalf("create on w1 once it takes sessions again: %v", err)
		}
		if _, err := fx.m.Create(ctx, CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"}); err != nil {
			t.Fatalf("second create, on whichever of the two is free: %v", err)
		}
	})
}

// TestNoCapacityConfirmedWithEtcd: a create that finds the (lagging) cache
// full asks etcd once before refusing. A slot another replica freed (this
// replica noted nothing) is used; a fleet that is full refuses after one
// read.
func TestNoCapacityConfirmedWithEtcd(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(quiet())
	fx.fleet.add("w1", 1)
	fx.fleet.blind = true
	first, err := fx.m.Create(ctx, CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"})
	if err != nil {
		t.Fatal(err)
	}
	// Another replica deletes it: the store frees the slot, this view
	// hears nothing.
	if _, _, err := fx.store.EndSession(ctx, first.GetId(), fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DELETED, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.m.Create(ctx, CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"}); err != nil {
		t.Fatalf("create after another replica's delete: %v", err)
	}
	if fx.fleet.confirms != 1 {
		t.Errorf("%d confirming reads, want 1", fx.fleet.confirms)
	}
	if _, err := fx.m.Create(ctx, CreateParams{Avatar: DefaultAvatar, Voice: DefaultVoice, Owner: "o"}); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("create on a full fleet: %v, want ErrNoCapacity", err)
	}
	if fx.fleet.confirms != 2 {
		t.Errorf("%d confirming reads after a refusal, want 2 (one per refused create)", fx.fleet.confirms)
	}
}
