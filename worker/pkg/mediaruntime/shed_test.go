package mediaruntime

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/wav"
	"github.com/avatarfleet/avatarfleet/worker/pkg/avatar"
	"github.com/avatarfleet/avatarfleet/worker/pkg/pipeline"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
)

// budgetRuntime starts a runtime with the given input budget and sessions
// on manual media clocks (their queues drain only when ticked).
func budgetRuntime(t *testing.T, budget int64, ids ...string) (*Runtime, func(id string)) {
	t.Helper()
	pack, err := defaultPack()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clocks := map[string]*pipeline.ManualClock{}
	r, err := New(Config{
		Devices:     []*fleetv1.GPU{{Index: 0, Slots: uint32(len(ids))}},
		Model:       newModel(t),
		Avatar:      func(string) (*avatar.Pack, error) { return pack, nil },
		Media:       func(*fleetv1.Session, MediaHooks) (Media, error) { return &sink{}, nil },
		InputBudget: budget,
		// The lifetime (and memory) checks run only when a test calls
		// them: this clock is never ticked.
		LifetimeClock: pipeline.NewManualClock(),
		Clock: func(s *fleetv1.Session) pipeline.Clock {
			mu.Lock()
			defer mu.Unlock()
			clocks[s.GetId()] = pipeline.NewManualClock()
			return clocks[s.GetId()]
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	for i, id := range ids {
		if err := r.Start(context.Background(), &fleetv1.Session{Id: id, Gpu: 0, Slot: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	tick := func(id string) {
		t.Helper()
		mu.Lock()
		c := clocks[id]
		mu.Unlock()
		select {
		case c.Ticks() <- time.Time{}:
		case <-time.After(10 * time.Second):
			t.Fatalf("session %s took no tick", id)
		}
	}
	return r, tick
}

func silence(d time.Duration) []byte {
	return wav.Encode16(make([]float32, int(d/time.Millisecond)*16), 16000)
}

// TestHostileWAVEndsNothing: the WAV attacks of issue 8 through the real
// pipeline: refused as invalid input from the header, nothing buffered,
// and both sessions go on taking ticks.
func TestHostileWAVEndsNothing(t *testing.T) {
	r, tick := budgetRuntime(t, 0, "attacked", "watched")
	ctx := context.Background()
	oneHz := wav.Encode16(make([]float32, 1<<19), 8000) // 1 MiB of data
	binary.LittleEndian.PutUint32(oneHz[24:], 1)
	binary.LittleEndian.PutUint32(oneHz[28:], 2)
	claims := wav.Encode16(make([]float32, 500), 8000)
	binary.LittleEndian.PutUint32(claims[40:], 1<<31) // 2^30 16-bit samples declared: 37 hours
	claims8 := append([]byte(nil), claims...)
	binary.LittleEndian.PutUint16(claims8[32:], 1) // 8-bit: 2^31 samples
	binary.LittleEndian.PutUint16(claims8[34:], 8)
	binary.LittleEndian.PutUint32(claims8[28:], 8000)
	for name, b := range map[string][]byte{"1 Hz": oneHz, "2^30 samples": claims, "2^31 samples": claims8} {
		if err := r.PushAudio(ctx, "attacked", b, false); !errors.Is(err, runtime.ErrInvalidInput) {
			t.Errorf("%s: %v, want ErrInvalidInput", name, err)
		}
	}
	if used, _ := r.InputUsed(); used != 0 {
		t.Errorf("refused files left %d bytes buffered", used)
	}
	for range 3 {
		tick("attacked")
		tick("watched")
	}
	if got := r.Sessions(); len(got) != 2 {
		t.Fatalf("sessions %v after the attack", got)
	}
	if err := r.PushAudio(ctx, "attacked", silence(time.Second), false); err != nil {
		t.Errorf("a good file after the attack: %v", err)
	}
}

// TestGreedySessionShed: two sessions share a 3 s input budget. When the
// modest one asks for room, the greedy one (holding the most) is shed —
// ended with END_REASON_ERROR, saying so — and the modest one's input is
// taken; the modest one goes on. The heap check sheds the same way.
func TestGreedySessionShed(t *testing.T) {
	const second = 4 * 16000
	r, tick := budgetRuntime(t, 3*second, "greedy", "modest", "third")
	ctx := context.Background()
	if err := r.PushAudio(ctx, "greedy", silence(2*time.Second), false); err != nil {
		t.Fatal(err)
	}
	if err := r.PushAudio(ctx, "modest", silence(500*time.Millisecond), false); err != nil {
		t.Fatal(err)
	}
	if err := r.PushAudio(ctx, "modest", silence(time.Second), false); err != nil {
		t.Fatalf("modest push over the budget: %v, want the greedy session shed and the push taken", err)
	}
	select {
	case e := <-r.Ended():
		if e.SessionID != "greedy" || e.Reason != fleetv1.EndReason_END_REASON_ERROR || e.State != fleetv1.SessionState_SESSION_STATE_FAILED || !strings.Contains(e.Message, "shed") {
			t.Errorf("ended %+v, want greedy failed with error, shed", e)
		}
		t.Logf("ended: %s", e.Message)
	case <-time.After(10 * time.Second):
		t.Fatal("the greedy session was not reported")
	}
	if _, err := r.Status("greedy"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("the shed session still runs: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for used, _ := r.InputUsed(); used != 3*second/2; used, _ = r.InputUsed() {
		if time.Now().After(deadline) {
			t.Fatalf("input held %d bytes, want modest's 1.5 s (%d)", used, 3*second/2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range 5 {
		tick("modest")
		tick("third")
	}

	// A session asking for more than is left when it holds the most
	// itself is the one shed.
	if err := r.PushAudio(ctx, "third", silence(200*time.Millisecond), false); err != nil {
		t.Fatal(err)
	}
	err := r.PushAudio(ctx, "modest", silence(2*time.Second), false)
	if !errors.Is(err, runtime.ErrSlotBusy) || !strings.Contains(err.Error(), "shed") {
		t.Fatalf("greediest asking for more: %v, want ErrSlotBusy, shed", err)
	}
	select {
	case e := <-r.Ended():
		if e.SessionID != "modest" || e.Reason != fleetv1.EndReason_END_REASON_ERROR {
			t.Errorf("ended %+v, want modest", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the shed session was not reported")
	}

}

// TestHeapPressureShed: when the live heap passes HeapLimit, the session
// holding the most input is shed, but only one holding MinHeapShedBytes.
func TestHeapPressureShed(t *testing.T) {
	r, _ := budgetRuntime(t, 0, "small", "big")
	ctx := context.Background()
	r.heapLimit, r.heap = 1<<30, func() int64 { return 2 << 30 }
	if err := r.PushAudio(ctx, "small", silence(200*time.Millisecond), false); err != nil {
		t.Fatal(err)
	}
	r.checkMemory()
	if got := r.Sessions(); len(got) != 2 {
		t.Fatalf("heap pressure shed a session holding 12800 bytes: %v left", got)
	}
	if err := r.PushAudio(ctx, "big", silence(20*time.Second), false); err != nil { // 1.28 MB
		t.Fatal(err)
	}
	r.checkMemory()
	select {
	case e := <-r.Ended():
		if e.SessionID != "big" || e.Reason != fleetv1.EndReason_END_REASON_ERROR || !strings.Contains(e.Message, "live heap") {
			t.Errorf("ended %+v, want big shed for the heap", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("heap pressure shed nothing")
	}
	if got := r.Sessions(); len(got) != 1 || got[0] != "small" {
		t.Errorf("sessions %v, want [small]", got)
	}
}
