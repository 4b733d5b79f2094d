package registry

import (
	"context"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func TestWorkerViewServes(t *testing.T) {
	tests := []struct {
		names []string
		name  string
		want  bool
	}{
		{nil, "default", true},
		{nil, "", true},
		{nil, "anna", false},
		{[]string{"anna", "bob"}, "bob", true},
		{[]string{"anna"}, "default", false},
		{[]string{"anna"}, "", false},
	}
	for _, tt := range tests {
		v := WorkerView{Worker: &fleetv1.Worker{Avatars: tt.names, Voices: tt.names}}
		if got := v.ServesAvatar(tt.name); got != tt.want {
			t.Errorf("ServesAvatar(%q) with %v = %v, want %v", tt.name, tt.names, got, tt.want)
		}
		if got := v.ServesVoice(tt.name); got != tt.want {
			t.Errorf("ServesVoice(%q) with %v = %v, want %v", tt.name, tt.names, got, tt.want)
		}
	}
}

func TestWorkerViewTakesSessions(t *testing.T) {
	active := fleetv1.WorkerState_WORKER_STATE_ACTIVE
	tests := []struct {
		name string
		v    WorkerView
		want bool
	}{
		{"active", WorkerView{Worker: &fleetv1.Worker{State: active}}, true},
		{"drained by an admin", WorkerView{Worker: &fleetv1.Worker{State: active}, Drained: true}, false},
		{"draining itself", WorkerView{Worker: &fleetv1.Worker{State: fleetv1.WorkerState_WORKER_STATE_DRAINING}}, false},
		{"down", WorkerView{Worker: &fleetv1.Worker{State: active}, Down: true}, false},
		{"not active yet", WorkerView{Worker: &fleetv1.Worker{}}, false},
	}
	for _, tt := range tests {
		if got := tt.v.TakesSessions(); got != tt.want {
			t.Errorf("%s: TakesSessions = %v, want %v", tt.name, got, tt.want)
		}
	}
	v := WorkerView{Worker: &fleetv1.Worker{Gpus: []*fleetv1.GPU{{Index: 0, Slots: 3}, {Index: 1, Slots: 2}}}}
	if got := v.TotalSlots(); got != 5 {
		t.Errorf("TotalSlots = %d, want 5", got)
	}
}

// TestNoteReleased: a release this replica noted frees the slot it held
// for that session, and only that: a slot the cache gives to another
// session (reserved again meanwhile) stays used. A late watch event of
// the reservation marks it again until the delete event that follows.
func TestNoteReleased(t *testing.T) {
	keys := fleetstore.NewKeys("/nr/")
	r := &Registry{keys: keys, log: slog.New(slog.DiscardHandler), synced: make(chan struct{})}
	w, err := proto.Marshal(&fleetv1.Worker{Id: "w", State: fleetv1.WorkerState_WORKER_STATE_ACTIVE, Gpus: []*fleetv1.GPU{{Index: 0, Slots: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	r.replace(context.Background(), []fleetstore.KV{{Key: keys.Worker("w"), Value: w}}, 1)
	free := func() int {
		n := 0
		for s := range uint32(2) {
			if _, ok := r.FreeSlot("w", 0, 2, int(s), func(x uint32) bool { return x != s }); ok {
				n++
			}
		}
		return n
	}
	r.NoteReserved("w", SlotRef{0, 0}, "a")
	r.NoteReserved("w", SlotRef{0, 1}, "b")
	if free() != 0 {
		t.Fatalf("%d free after two reservations", free())
	}
	r.NoteReleased("w", SlotRef{0, 1}, "other")
	if free() != 0 {
		t.Fatal("a release for another session freed the slot")
	}
	r.NoteReleased("w", SlotRef{0, 1}, "b")
	if v, _ := r.Worker("w"); free() != 1 || v.Sessions != 1 {
		t.Fatalf("after b's release: %d free, %d sessions; want 1, 1", free(), v.Sessions)
	}
	// The watch catches up: b's reservation, then its release.
	r.apply(context.Background(), []fleetstore.Event{{Type: fleetstore.EventPut, KV: fleetstore.KV{Key: keys.Slot("w", 0, 1), Value: []byte("b")}}}, 2)
	if free() != 0 {
		t.Fatal("the late reservation event did not mark the slot again")
	}
	r.apply(context.Background(), []fleetstore.Event{{Type: fleetstore.EventDelete, KV: fleetstore.KV{Key: keys.Slot("w", 0, 1)}}}, 3)
	if free() != 1 {
		t.Fatalf("%d free once the watch reported the release, want 1", free())
	}
	r.NoteReleased("nobody", SlotRef{0, 0}, "a") // an unknown worker is no error
}
