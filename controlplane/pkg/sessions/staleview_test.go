package sessions

import (
	"context"
	"testing"
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
