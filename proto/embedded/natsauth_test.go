package embedded_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"google.golang.org/protobuf/proto"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/internal/testpki"
)

// securedNATS is an embedded NATS with the embedded default's
// authentication and TLS that verifies fleet client certificates.
type securedNATS struct {
	srv     *embedded.NATSServer
	secrets embedded.NATSSecrets
	ca      *testpki.CA
}

func startSecuredNATS(t *testing.T) *securedNATS {
	t.Helper()
	secrets, err := embedded.LoadNATSSecrets(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.New(t, "fleet CA")
	srvCert := ca.Server(t, "nats")
	srv, err := embedded.StartNATS(embedded.NATSOptions{
		StoreDir: t.TempDir(),
		TLS: &tls.Config{
			Certificates: []tls.Certificate{srvCert.Pair},
			ClientCAs:    ca.Pool,
			ClientAuth:   tls.VerifyClientCertIfGiven,
			MinVersion:   tls.VersionTLS12,
		},
		Auth: secrets.Auth(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return &securedNATS{srv: srv, secrets: secrets, ca: ca}
}

// client connects with cfg (the server's CA added) and collects the
// asynchronous errors the server reports (permission violations).
func (s *securedNATS) client(t *testing.T, cfg fleetconn.NATSConfig) (*nats.Conn, <-chan error) {
	t.Helper()
	nc, errs, err := s.connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func (s *securedNATS) connect(cfg fleetconn.NATSConfig) (*nats.Conn, <-chan error, error) {
	cfg.URL = s.srv.URL()
	cfg.TLS.CAFile = s.ca.CAFile
	errs := make(chan error, 16)
	nc, err := fleetconn.NATS(cfg, nats.NoReconnect(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	return nc, errs, err
}

func (s *securedNATS) workerCert(t *testing.T, id string) fleetconn.NATSConfig {
	f := s.ca.Client(t, "worker-"+id, embedded.WorkerURIPrefix+id)
	return fleetconn.NATSConfig{TLS: fleetconn.TLSFiles{CertFile: f.CertFile, KeyFile: f.KeyFile}, InboxPrefix: fleetbus.WorkerInboxPrefix(id)}
}

func waitPermissionError(t *testing.T, errs <-chan error, subject string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subject) {
			t.Fatalf("async error = %v, want a permissions violation on %s", err, subject)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no permissions violation reported for %s", subject)
	}
}

func TestNATSRefusesClientsWithoutCredentials(t *testing.T) {
	s := startSecuredNATS(t)
	otherCA := testpki.New(t, "another CA")
	foreign := otherCA.Client(t, "w1", embedded.WorkerURIPrefix+"w1")
	noRole := s.ca.Client(t, "nobody", "avatarfleet://someone")
	for _, tc := range []struct {
		name string
		cfg  fleetconn.NATSConfig
	}{
		{"anonymous", fleetconn.NATSConfig{}},
		{"wrong control-plane password", fleetconn.NATSConfig{User: embedded.ControlPlaneUser, Password: "guess"}},
		{"another worker's password", fleetconn.NATSConfig{User: embedded.WorkerUser("w1"), Password: embedded.WorkerPassword(s.secrets.WorkerSecret, "w2")}},
		{"worker password under another secret", fleetconn.NATSConfig{User: embedded.WorkerUser("w1"), Password: embedded.WorkerPassword([]byte("other"), "w1")}},
		{"certificate of another CA", fleetconn.NATSConfig{TLS: fleetconn.TLSFiles{CertFile: foreign.CertFile, KeyFile: foreign.KeyFile}}},
		{"certificate naming no fleet role", fleetconn.NATSConfig{TLS: fleetconn.TLSFiles{CertFile: noRole.CertFile, KeyFile: noRole.KeyFile}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, _, err := s.connect(tc.cfg)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
		})
	}
}

func TestNATSWorkerPublishesOnlyItsOwnSubjects(t *testing.T) {
	s := startSecuredNATS(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cp, _ := s.client(t, s.secrets.ControlPlaneConfig(""))
	cpPub, err := fleetbus.NewPublisher(cp)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := fleetbus.EnsureStream(ctx, cpPub.JetStream(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Everything published on the events subjects, as the control plane sees it.
	seen, err := cp.SubscribeSync(fleetbus.EventsAll)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		cfg  fleetconn.NATSConfig
	}{
		{"password", s.secrets.WorkerConfig("", "w-a")},
		{"certificate", s.workerCert(t, "w-a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, errs := s.client(t, tc.cfg)
			forged := &fleetv1.Event{Type: fleetbus.SessionEnded, SessionId: "s-b", WorkerId: "w-b",
				Session: &fleetv1.Session{Id: "s-b", WorkerId: "w-b", Owner: "victim"}}
			body := marshal(t, forged)
			for _, subject := range []string{
				fleetbus.WorkerSessionSubject("w-b", "s-b"), // another worker's session
				fleetbus.SessionSubject("s-b"),              // the control plane's subject
				fleetbus.WorkerSubject("w-b"),               // another worker's own events
			} {
				if err := nc.Publish(subject, body); err != nil {
					t.Fatal(err)
				}
				waitPermissionError(t, errs, subject)
			}
			// Reading others' events is refused too.
			if _, err := nc.SubscribeSync(fleetbus.EventsAll); err != nil {
				t.Fatal(err)
			}
			waitPermissionError(t, errs, fleetbus.EventsAll)

			// Its own session's event goes through and is kept by the stream.
			pub, err := fleetbus.NewPublisher(nc, fleetbus.AsWorker("w-a"))
			if err != nil {
				t.Fatal(err)
			}
			own := fleetbus.SpeakingEvent(true, &fleetv1.Session{Id: "s-a", WorkerId: "w-a"}, time.Second)
			if err := pub.Publish(ctx, own); err != nil {
				t.Fatalf("publish own event: %v", err)
			}
			m, err := seen.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("own event not delivered: %v", err)
			}
			if m.Subject != fleetbus.WorkerSessionSubject("w-a", "s-a") {
				t.Fatalf("delivered %s; a refused publish went through", m.Subject)
			}
			// The publisher refuses to speak for another worker's session.
			if err := pub.Publish(ctx, fleetbus.SessionEvent(fleetbus.SessionEnded, forged.GetSession())); err == nil {
				t.Fatal("worker publisher published another worker's session event")
			}
		})
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d events, want the workers' own 2", info.State.Msgs)
	}
	if info.Config.MaxBytes != fleetbus.DefaultStreamMaxBytes {
		t.Fatalf("stream MaxBytes = %d", info.Config.MaxBytes)
	}
}

func TestNATSControlPlanePublishesLifecycleEvents(t *testing.T) {
	s := startSecuredNATS(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		cfg  fleetconn.NATSConfig
	}{
		{"password", s.secrets.ControlPlaneConfig("")},
		{"certificate", func() fleetconn.NATSConfig {
			f := s.ca.Client(t, "cp", embedded.ControlPlaneURI)
			return fleetconn.NATSConfig{TLS: fleetconn.TLSFiles{CertFile: f.CertFile, KeyFile: f.KeyFile}}
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, errs := s.client(t, tc.cfg)
			pub, err := fleetbus.NewPublisher(nc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fleetbus.EnsureStream(ctx, pub.JetStream(), time.Hour, fleetbus.WithMaxBytes(64<<20)); err != nil {
				t.Fatal(err)
			}
			cons, err := pub.JetStream().OrderedConsumer(ctx, fleetbus.StreamName, jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{fleetbus.EventsAll}, DeliverPolicy: jetstream.DeliverAllPolicy})
			if err != nil {
				t.Fatal(err)
			}
			sess := &fleetv1.Session{Id: "s-" + tc.name, WorkerId: "w-a", Owner: "o"}
			events := []*fleetv1.Event{
				fleetbus.SessionEvent(fleetbus.SessionReady, sess),
				fleetbus.SessionEvent(fleetbus.SessionEnded, sess),
				fleetbus.WorkerEvent(fleetbus.WorkerDown, "w-a", &fleetv1.Worker{Id: "w-a"}),
			}
			for _, e := range events {
				if err := pub.Publish(ctx, e); err != nil {
					t.Fatalf("publish %s: %v", e.GetType(), err)
				}
			}
			// The consumer starts at the stream's first event: skip the
			// other subtest's.
			want := map[string]bool{}
			for _, e := range events {
				want[e.GetId()] = true
			}
			for read := 0; len(want) > 0; read++ {
				if read == 10 {
					t.Fatalf("events %v never read", want)
				}
				m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
				if err != nil {
					t.Fatalf("read events: %v", err)
				}
				e, err := fleetbus.DecodeEvent(m.Data())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := fleetbus.CheckEvent(m.Subject(), e); err != nil {
					t.Fatal(err)
				}
				delete(want, e.GetId())
			}
			select {
			case err := <-errs:
				t.Fatalf("control plane got %v", err)
			default:
			}
		})
	}
}

func TestNATSWorkerAnswersItsOwnHealthCheck(t *testing.T) {
	s := startSecuredNATS(t)
	cp, _ := s.client(t, s.secrets.ControlPlaneConfig(""))
	for _, tc := range []struct {
		name string
		id   string
		cfg  fleetconn.NATSConfig
	}{
		{"password", "w-p", s.secrets.WorkerConfig("", "w-p")},
		{"certificate", "w-c", s.workerCert(t, "w-c")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, errs := s.client(t, tc.cfg)
			// As worker/pkg/health runs it.
			svc, err := micro.AddService(nc, micro.Config{Name: fleetbus.HealthServiceName, Version: "1.0.0"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = svc.Stop() }()
			if err := svc.AddEndpoint("health", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte("ok")) }),
				micro.WithEndpointSubject(fleetbus.HealthSubject(tc.id)), micro.WithEndpointQueueGroupDisabled()); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			m, err := cp.Request(fleetbus.HealthSubject(tc.id), nil, 10*time.Second)
			if err != nil || string(m.Data) != "ok" {
				t.Fatalf("health reply = %v, %v", m, err)
			}
			// It cannot answer for another worker.
			if _, err := nc.SubscribeSync(fleetbus.HealthSubject("someone-else")); err != nil {
				t.Fatal(err)
			}
			waitPermissionError(t, errs, fleetbus.HealthSubject("someone-else"))
			// Nor publish to a subject nobody asked it to answer.
			if err := nc.Publish("_INBOX.unasked", []byte("x")); err != nil {
				t.Fatal(err)
			}
			waitPermissionError(t, errs, "_INBOX.unasked")
		})
	}
}

func marshal(t *testing.T, e *fleetv1.Event) []byte {
	t.Helper()
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
