package health

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/worker/internal/fleettest"
)

var servers *fleettest.Servers

func TestMain(m *testing.M) { fleettest.Main(m, &servers) }

func TestHealthEndpointAnswersWithLiveState(t *testing.T) {
	id := servers.Name(t, "w")
	var sessions atomic.Int64
	var draining atomic.Bool
	svc, err := Start(servers.NATSConn(t), Config{
		WorkerID: id,
		Version:  "v1.2.3-test",
		Report: func() Report {
			st := fleetv1.WorkerState_WORKER_STATE_ACTIVE
			if draining.Load() {
				st = fleetv1.WorkerState_WORKER_STATE_DRAINING
			}
			return Report{ID: id, State: StateName(st), Sessions: int(sessions.Load()), Version: "v1.2.3-test"}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	client := servers.NATSConn(t)
	ask := func() Report {
		t.Helper()
		msg, err := client.Request(fleetbus.HealthSubject(id), nil, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r Report
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			t.Fatalf("reply %q: %v", msg.Data, err)
		}
		return r
	}
	if got, want := ask(), (Report{ID: id, State: "active", Sessions: 0, Version: "v1.2.3-test"}); got != want {
		t.Fatalf("report = %+v, want %+v", got, want)
	}
	sessions.Store(2)
	draining.Store(true)
	if got := ask(); got.State != "draining" || got.Sessions != 2 {
		t.Fatalf("report after change = %+v", got)
	}

	// micro's PING and INFO come for free and name the worker.
	ping, err := micro.ControlSubject(micro.PingVerb, fleetbus.HealthServiceName, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Request(ping, nil, 2*time.Second); err != nil {
		t.Fatalf("PING: %v", err)
	}
	infoSubj, _ := micro.ControlSubject(micro.InfoVerb, fleetbus.HealthServiceName, svc.Info().ID)
	msg, err := client.Request(infoSubj, nil, 2*time.Second)
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Metadata["worker"] != id || len(info.Endpoints) != 1 || info.Endpoints[0].Subject != fleetbus.HealthSubject(id) {
		t.Fatalf("INFO = %+v", info)
	}

	// A stopped worker does not answer: that is what "down" is made of.
	if err := svc.Stop(); err != nil {
		t.Fatal(err)
	}
	// (Stop drains the subscription asynchronously, so allow a moment.)
	fleettest.Eventually(t, 5*time.Second, "no responders after Stop", func() bool {
		_, err := client.Request(fleetbus.HealthSubject(id), nil, time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
}

func TestStateName(t *testing.T) {
	for st, want := range map[fleetv1.WorkerState]string{
		fleetv1.WorkerState_WORKER_STATE_ACTIVE:   "active",
		fleetv1.WorkerState_WORKER_STATE_DRAINING: "draining",
		fleetv1.WorkerState_WORKER_STATE_DOWN:     "down",
	} {
		if got := StateName(st); got != want {
			t.Errorf("StateName(%s) = %q, want %q", st, got, want)
		}
	}
}

func TestStartValidates(t *testing.T) {
	if _, err := Start(nil, Config{WorkerID: "w", Report: func() Report { return Report{} }}); err == nil {
		t.Fatal("Start accepted a nil connection")
	}
}
