package fleetbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// TestLastMark: the last mark is the greatest well-formed one over the
// sessions' and the workers' subjects; unmarked messages and marks that do
// not match their event are ignored, and a re-published event is stored
// once.
func TestLastMark(t *testing.T) {
	ns, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, err := fleetbus.NewPublisher(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := fleetbus.EnsureStream(ctx, pub.JetStream(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := pub.LastMark(ctx); err != nil || ok {
		t.Fatalf("empty stream: mark %v, %v", ok, err)
	}
	sess := &fleetv1.Session{Id: "s1", WorkerId: "w.1", State: fleetv1.SessionState_SESSION_STATE_READY}
	w := &fleetv1.Worker{Id: "w.1"}
	for _, step := range []struct {
		e *fleetv1.Event
		m fleetbus.Mark
	}{
		{fleetbus.SessionEvent(fleetbus.SessionReady, sess), fleetbus.Mark{Revision: 7, Index: 0, Count: 1}},
		{fleetbus.WorkerEvent(fleetbus.WorkerDown, "w.1", w), fleetbus.Mark{Revision: 9, Index: 0, Count: 2}},
		{fleetbus.WorkerEvent(fleetbus.WorkerDown, "w.1", w), fleetbus.Mark{Revision: 9, Index: 0, Count: 2}}, // again
	} {
		if err := pub.PublishMarked(ctx, step.e, step.m); err != nil {
			t.Fatal(err)
		}
		if step.e.GetId() != step.m.EventID() || step.e.GetRevision() != step.m.Revision {
			t.Fatalf("event stamped %s at %d", step.e.GetId(), step.e.GetRevision())
		}
	}
	// Another worker publishes on its own subject: an unmarked event, then
	// one whose headers do not match its id.
	if err := pub.Publish(ctx, fleetbus.WorkerEvent(fleetbus.WorkerRegistered, "w2", nil)); err != nil {
		t.Fatal(err)
	}
	forged := nats.NewMsg(fleetbus.WorkerSubject("w3"))
	forged.Data = []byte{}
	forged.Header.Set(fleetbus.HeaderRevision, "1000")
	forged.Header.Set(fleetbus.HeaderIndex, "0")
	forged.Header.Set(fleetbus.HeaderCount, "1")
	if _, err := pub.JetStream().PublishMsg(ctx, forged); err != nil {
		t.Fatal(err)
	}
	m, ok, err := pub.LastMark(ctx)
	if err != nil || !ok || m != (fleetbus.Mark{Revision: 9, Index: 0, Count: 2}) {
		t.Fatalf("last mark %+v (%v, %v), want 9-0 of 2", m, ok, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("stream holds %d messages, want 4 (the repeat dropped)", info.State.Msgs)
	}
	e, ok, err := pub.LastEvent(ctx, fleetbus.SessionSubject("s1"))
	if err != nil || !ok || e.GetId() != "7-0" {
		t.Fatalf("last event of s1: %v %v %v", e, ok, err)
	}
	if err := pub.PublishMarked(ctx, fleetbus.SessionEvent(fleetbus.SessionReady, &fleetv1.Session{Id: "bad id"}), fleetbus.Mark{Revision: 10, Count: 1}); err == nil {
		t.Fatal("an event whose id cannot be a subject was published")
	}
}

// BenchmarkPublishMarked: derived events are published one at a time, each
// acknowledged before the next (file storage, loopback).
func BenchmarkPublishMarked(b *testing.B) {
	ns, err := embedded.StartNATS(embedded.NATSOptions{StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	pub, err := fleetbus.NewPublisher(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := fleetbus.EnsureStream(ctx, pub.JetStream(), time.Hour); err != nil {
		b.Fatal(err)
	}
	s := &fleetv1.Session{Id: "s1", Owner: "o", WorkerId: "w1", State: fleetv1.SessionState_SESSION_STATE_READY}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if err := pub.PublishMarked(ctx, fleetbus.SessionEvent(fleetbus.SessionReady, s), fleetbus.Mark{Revision: int64(i + 1), Count: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
