package bench

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/e2e/internal/testfleet"
	"github.com/avatarfleet/avatarfleet/e2e/internal/whepviewer"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// migrationRun is the outcome of one drain --migrate scenario.
type migrationRun struct {
	gaps    []time.Duration // first switch of each viewer
	reasons []string
	took    time.Duration // drain request → worker empty and records settled
}

// runMigration starts a fleet of a source worker holding n watched
// sessions and two empty targets, drains the source with migrate, and
// waits until every session is ready elsewhere, its viewer (a Follower) is
// receiving from the new worker, and the source holds no slot.
//
// followEvents makes the viewers follow GET /v1/sessions/{id}/events and
// switch on session.moved; without, they switch only when the source's
// connection closes (the failure path). Lifecycle events are derived from
// etcd by the outbox; where it does not run, standInOutbox publishes
// session.moved from the record change the same way (it stays silent when
// the fleet announces the move itself), so the event path is exercised
// end to end either way.
//
// sigterm stops the source gracefully instead (its drain sets
// Worker.migrate) and waits for it to exit.
func runMigration(tb testing.TB, n int, followEvents, sigterm bool) migrationRun {
	tb.Helper()
	sfus := map[string]*pacedSFU{"src": newPacedSFU(tb), "t1": newPacedSFU(tb), "t2": newPacedSFU(tb)}
	drainTimeout := time.Duration(0) // the fleet's default (2 s)
	if sigterm {
		// Room for three migrations, short enough that the fleet's stop
		// (every worker drains its sessions) stays well within its bound.
		drainTimeout = 10 * time.Second
	}
	f := testfleet.Start(tb, testfleet.Options{
		NoCredentials: true, FleetInsecure: true, DrainTimeout: drainTimeout,
		Workers: []testfleet.WorkerSpec{
			{ID: "src", SlotsPerGPU: n, Signaling: sfus["src"]},
			{ID: "t1", SlotsPerGPU: n, Signaling: sfus["t1"]},
			{ID: "t2", SlotsPerGPU: n, Signaling: sfus["t2"]},
		},
	})
	for id, sfu := range sfus {
		rt := f.Worker(id).Agent.Runtime()
		sfu.setRunning(func(s string) bool { return slices.Contains(rt.Sessions(), s) })
	}
	// Every session on src: the targets are drained while they are placed.
	for _, w := range []string{"t1", "t2"} {
		if r := f.MustDo(0, "POST", "/v1/workers/"+w+"/drain", testfleet.AdminKey, nil); r.Status != 202 {
			tb.Fatalf("drain %s: %d %s", w, r.Status, r.Body)
		}
	}
	f.Eventually(10*time.Second, "the replica sees the targets drained", func() bool {
		v1, _ := f.Replicas[0].Registry().Worker("t1")
		v2, _ := f.Replicas[0].Registry().Worker("t2")
		return v1.Drained && v2.Drained
	})
	sessions := make([]apiv1.Session, n)
	for i := range sessions {
		r := f.MustDo(0, "POST", "/v1/sessions", testfleet.SessionsKey, apiv1.CreateSessionRequest{})
		if r.Status != 201 {
			tb.Fatalf("create: %d %s", r.Status, r.Body)
		}
		r.JSON(tb, &sessions[i])
		if sessions[i].WorkerID != "src" {
			tb.Fatalf("session placed on %s, want src", sessions[i].WorkerID)
		}
	}
	for _, w := range []string{"t1", "t2"} {
		if r := f.MustDo(0, "POST", "/v1/workers/"+w+"/undrain", testfleet.AdminKey, nil); r.Status != 200 {
			tb.Fatalf("undrain %s: %d %s", w, r.Status, r.Body)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	eventsURL := "-"
	if followEvents {
		eventsURL = ""
		stopOutbox := standInOutbox(tb, f, sessions)
		defer stopOutbox()
	}
	followers := make([]*whepviewer.Follower, n)
	for i, s := range sessions {
		fl, err := whepviewer.Follow(ctx, s.WHEPURL, s.ViewerToken, whepviewer.FollowOptions{EventsURL: eventsURL})
		if err != nil {
			tb.Fatalf("viewer of %s: %v", s.ID, err)
		}
		followers[i] = fl
		tb.Cleanup(func() {
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			_ = fl.Close(cctx)
		})
		select {
		case <-fl.Viewer().FirstPacket():
		case <-ctx.Done():
			tb.Fatalf("viewer of %s got no media", s.ID)
		}
	}
	if followEvents {
		time.Sleep(300 * time.Millisecond) // let the event streams subscribe
	}

	start := time.Now()
	stopped := make(chan error, 1)
	if sigterm {
		go func() { stopped <- f.StopWorker("src") }()
	} else {
		r := f.MustDo(0, "POST", "/v1/workers/src/drain", testfleet.AdminKey, apiv1.DrainRequest{Migrate: true})
		if r.Status != 202 {
			tb.Fatalf("drain --migrate: %d %s", r.Status, r.Body)
		}
	}
	// settled describes what is still missing ("" when nothing is).
	settled := func() string {
		perGPU, _, err := f.SlotKeys(ctx)
		if err != nil || len(perGPU["src"]) != 0 {
			return fmt.Sprintf("src slots %v (%v)", perGPU["src"], err)
		}
		for i, s := range sessions {
			rec, _, err := f.Store.Session(ctx, s.ID)
			if err != nil || rec.GetState() != fleetv1.SessionState_SESSION_STATE_READY || rec.GetWorkerId() == "src" ||
				rec.GetMigratingFrom() != nil || rec.GetMoves() != 1 || rec.GetMoveReason() != fleetstore.MoveReasonDrain {
				return fmt.Sprintf("record of %s: %v (%v)", s.ID, rec, err)
			}
			if len(followers[i].Switches()) == 0 || time.Since(followers[i].Viewer().LastPacket()) > time.Second {
				return fmt.Sprintf("viewer of %s: %d switches, last packet %s ago (err %v)", s.ID,
					len(followers[i].Switches()), time.Since(followers[i].Viewer().LastPacket()), followers[i].Err())
			}
		}
		return ""
	}
	for deadline := time.Now().Add(90 * time.Second); ; {
		missing := settled()
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after 90s: %s", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	run := migrationRun{took: time.Since(start)}
	for i, fl := range followers {
		sw := fl.Switches()[0]
		run.gaps = append(run.gaps, sw.Gap)
		run.reasons = append(run.reasons, sw.Reason)
		tb.Logf("viewer of %s: switched on %s after %d offer(s), gap %s", sessions[i].ID, sw.Reason, sw.Attempts, sw.Gap)
	}
	if src := f.Worker("src").Agent.Runtime().Sessions(); len(src) != 0 {
		tb.Fatalf("src still runs %v", src)
	}
	if sigterm {
		select {
		case err := <-stopped:
			if err != nil {
				tb.Fatalf("graceful stop of src: %v", err)
			}
		case <-ctx.Done():
			tb.Fatal("src did not exit after its sessions migrated")
		}
	}
	return run
}

// standInOutboxWait is how long the stand-in gives the fleet's own outbox
// to announce a move before it announces it itself.
const standInOutboxWait = 500 * time.Millisecond

// standInOutbox publishes session.moved for each of sessions when its
// record turns up READY on another worker, as the outbox derives it from
// etcd, unless the fleet announced that move itself within
// standInOutboxWait (once the outbox runs, the stand-in stays silent and
// the test exercises the real event). It returns its stop.
func standInOutbox(tb testing.TB, f *testfleet.Fleet, sessions []apiv1.Session) func() {
	tb.Helper()
	nc, err := nats.Connect(f.NATS.URL())
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := fleetbus.NewPublisher(nc)
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	announced := map[string]bool{} // by the fleet itself
	sub, err := nc.Subscribe(fleetbus.EventsAll, func(m *nats.Msg) {
		e, err := fleetbus.DecodeEvent(m.Data)
		if err == nil && e.GetType() == "session.moved" && !strings.HasPrefix(e.GetId(), "standin-") {
			mu.Lock()
			announced[e.GetSessionId()] = true
			mu.Unlock()
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		seen := map[string]time.Time{} // when the move showed in the record
		done := map[string]bool{}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for len(done) < len(sessions) {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, s := range sessions {
				if done[s.ID] {
					continue
				}
				rec, _, err := f.Store.Session(ctx, s.ID)
				if err != nil || rec.GetMoves() == 0 || rec.GetState() != fleetv1.SessionState_SESSION_STATE_READY {
					continue
				}
				if seen[s.ID].IsZero() {
					seen[s.ID] = time.Now()
				}
				mu.Lock()
				byFleet := announced[s.ID]
				mu.Unlock()
				if byFleet {
					done[s.ID] = true
					continue
				}
				if time.Since(seen[s.ID]) < standInOutboxWait {
					continue
				}
				e := fleetbus.SessionEvent("session.moved", rec)
				e.Id = fmt.Sprintf("standin-%s-%d", s.ID, rec.GetMoves())
				e.FromWorker, e.ToWorker, e.Reason = rec.GetMovedFrom(), rec.GetWorkerId(), rec.GetMoveReason()
				if err := pub.Publish(ctx, e); err != nil {
					tb.Errorf("publish session.moved: %v", err)
				}
				done[s.ID] = true
			}
		}
	})
	return func() { cancel(); wg.Wait(); _ = sub.Unsubscribe(); nc.Close() }
}

// TestDrainMigrate: drain --migrate of a worker with 3 watched sessions
// moves all three to other workers, every viewer keeps receiving from the
// new worker, and the drained worker ends with no session. Both ways a
// viewer learns of the move are exercised: the session.moved event, and
// the source's connection closing; and SIGTERM of a worker, when the
// others have room, migrates its sessions the same way.
func TestDrainMigrate(t *testing.T) {
	for _, tt := range []struct {
		name         string
		followEvents bool
		sigterm      bool
		wantReason   string
	}{
		{"session.moved event", true, false, whepviewer.ReasonMoved},
		{"connection closed", false, false, whepviewer.ReasonDown},
		{"SIGTERM", true, true, whepviewer.ReasonMoved},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run := runMigration(t, 3, tt.followEvents, tt.sigterm)
			for i, r := range run.reasons {
				if r != tt.wantReason && (tt.wantReason != whepviewer.ReasonDown || r != whepviewer.ReasonStalled) {
					t.Errorf("viewer %d switched on %s, want %s", i, r, tt.wantReason)
				}
			}
			t.Logf("3 sessions migrated in %s; gaps p50 %s, max %s", run.took, percentileD(run.gaps, 0.5), percentileD(run.gaps, 1))
		})
	}
}

// BenchmarkMigration measures the viewer's gap in a live migration on
// drain (3 sessions, each with a Pion WHEP viewer that follows it; three
// runs): from
// the last packet on the old worker's connection to the first on the new
// one, for viewers switching on session.moved and for viewers that only
// notice the source's connection closing.
func BenchmarkMigration(b *testing.B) {
	for _, mode := range []struct {
		name   string
		events bool
	}{{"moved_event", true}, {"connection_closed", false}} {
		b.Run(mode.name, func(b *testing.B) {
			var gaps []time.Duration
			var took time.Duration
			// Three fleets per iteration: nine viewers' gaps (make bench
			// runs one iteration).
			const rounds = 3
			for range b.N * rounds {
				run := runMigration(b, 3, mode.events, false)
				gaps = append(gaps, run.gaps...)
				took += run.took
			}
			b.ReportMetric(ms64(percentileD(gaps, 0.5)), "gap-p50-ms")
			b.ReportMetric(ms64(percentileD(gaps, 1)), "gap-max-ms")
			b.ReportMetric(ms64(took/time.Duration(b.N*rounds)), "drain-ms")
			fmt.Printf("migration (%s): %d viewers, gap p50 %s, max %s\n", mode.name, len(gaps), percentileD(gaps, 0.5), percentileD(gaps, 1))
		})
	}
}

func percentileD(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

func ms64(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
