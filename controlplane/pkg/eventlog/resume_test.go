package eventlog_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// TestResumeAfterWorkerEvent: when the stream's last derived event is
// about a worker, a new leader resumes after it (etcd backs its mark) and
// publishes nothing twice.
func TestResumeAfterWorkerEvent(t *testing.T) {
	r := newRig(t)
	keys := r.store.Keys()
	stop := r.start("a")
	r.warmUp()
	lease, err := r.cli.Grant(r.ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&fleetv1.Worker{Id: "w1", State: fleetv1.WorkerState_WORKER_STATE_ACTIVE})
	if _, err := r.cli.Put(r.ctx, keys.Worker("w1"), string(b), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Put(r.ctx, keys.Health("w1"), "down", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	r.waitFor(20*time.Second, "worker.registered, worker.down", func(s []stored) bool { return len(s) == 2 })
	stop()
	r.start("b")
	r.session("s1", fleetv1.SessionState_SESSION_STATE_STARTING)
	got := r.waitFor(20*time.Second, "the next event", func(s []stored) bool { return len(s) == 3 })
	if e := got[2].e; e.GetType() != fleetbus.SessionStarting {
		t.Fatalf("third event %s", e.GetType())
	}
	time.Sleep(500 * time.Millisecond)
	if n := metric(t, r.regs["b"], "avatarfleet_eventlog_published_total"); n != 1 {
		t.Fatalf("the new leader published %v events, want 1 (it resumed before the worker's event)", n)
	}
}

// TestForgedWorkerMark: a mark on a worker's subject that etcd does not
// back (a worker may publish there) does not make a new leader skip the
// changes before it, and its message id does not make the stream drop the
// real event of that id.
func TestForgedWorkerMark(t *testing.T) {
	r := newRig(t)
	stop := r.start("a")
	r.warmUp()
	r.session("s1", fleetv1.SessionState_SESSION_STATE_STARTING)
	r.waitFor(20*time.Second, "s1 starting", func(s []stored) bool { return len(s) == 1 })
	stop()
	r.session("s1", fleetv1.SessionState_SESSION_STATE_READY)
	now := r.session("s2", fleetv1.SessionState_SESSION_STATE_STARTING)

	// A worker publishes an event with a well-formed mark at etcd's
	// current revision on its own subject.
	m := fleetbus.Mark{Revision: now, Index: 0, Count: 1}
	e := fleetbus.WorkerEvent(fleetbus.WorkerUp, "evil", nil)
	e.Id, e.Revision = m.EventID(), m.Revision
	data, _ := proto.Marshal(e)
	msg := nats.NewMsg(fleetbus.WorkerSubject("evil"))
	msg.Data = data
	msg.Header.Set(fleetbus.HeaderRevision, strconv.FormatInt(now, 10))
	msg.Header.Set(fleetbus.HeaderIndex, "0")
	msg.Header.Set(fleetbus.HeaderCount, "1")
	// Its message id is the event id s2's starting will have.
	if _, err := r.pub.JetStream().PublishMsg(r.ctx, msg, jetstream.WithMsgID(m.EventID())); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := r.pub.LastMark(r.ctx); err != nil || !ok || got != m {
		t.Fatalf("the forged mark is not the stream's last: %v %v %v", got, ok, err)
	}
	r.start("b")
	// The stream: s1 starting, the forged event, then what the new leader
	// did not skip.
	got := r.waitFor(20*time.Second, "s1 ready and s2 starting", func(s []stored) bool { return len(s) == 4 })
	if got[2].e.GetSessionId() != "s1" || got[3].e.GetSessionId() != "s2" {
		t.Fatalf("after the forged mark: %v, %v", got[2].e, got[3].e)
	}
}
