package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
	"github.com/avatarfleet/avatarfleet/proto/fleetconn"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
	"github.com/avatarfleet/avatarfleet/worker/pkg/health"
	"github.com/avatarfleet/avatarfleet/worker/pkg/registration"
	"github.com/avatarfleet/avatarfleet/worker/pkg/runtime"
	"github.com/avatarfleet/avatarfleet/worker/pkg/server"
	"github.com/avatarfleet/avatarfleet/worker/pkg/slotwatch"
)

// Bounds on the steps of startup and shutdown.
const (
	etcdDialTimeout    = 5 * time.Second
	publishTimeout     = 5 * time.Second
	stepTimeout        = 10 * time.Second
	grpcStopTimeout    = 5 * time.Second
	drainPoll          = 100 * time.Millisecond
	eventRetention     = 24 * time.Hour
	maxRegisterBackoff = 5 * time.Second
)

// instance is one Run of an Agent: the connections and components that live
// exactly as long as that Run.
type instance struct {
	*Agent
	cli      *clientv3.Client
	nc       *nats.Conn
	events   *eventPublisher
	store    *fleetstore.Store
	reg      *registration.Registrar
	watch    *slotwatch.Watcher
	speech   *speechAcks
	grpc     *grpc.Server
	health   micro.Service
	draining atomic.Bool
}

// Run runs the worker until ctx ends, then drains: the worker record turns
// DRAINING and new sessions are refused; sessions get DrainTimeout to end
// by themselves, the rest end with reason drained; the lease is revoked and
// gRPC stops. Run returns nil after that clean shutdown, ErrAborted after
// Abort, or the error of a component that failed.
func (a *Agent) Run(ctx context.Context) error {
	first := false
	a.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("agent: Run called twice or after Close")
	}
	in, err := a.connect()
	if err != nil {
		_ = a.lis.Close()
		_ = a.closeMetrics()
		_ = a.rt.Close(context.Background())
		return err
	}
	defer in.closeConnections()
	defer func() { _ = a.rt.Close(context.Background()) }()

	// life outlives ctx: ctx ending is the request to drain, and the lease
	// keep-alive, the slot watch and gRPC must keep working through the drain.
	life, endLife := context.WithCancel(context.WithoutCancel(ctx))
	defer endLife()
	g, gctx := errgroup.WithContext(life)
	g.Go(func() error {
		if err := in.grpc.Serve(a.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve gRPC on %s: %w", a.lis.Addr(), err)
		}
		return nil
	})
	if a.metrics != nil {
		g.Go(a.metrics.serve)
		g.Go(func() error {
			<-gctx.Done()
			if err := a.metrics.close(); err != nil {
				a.log.Warn("close metrics server", "err", err)
			}
			return nil
		})
	}

	in.ensureStream(ctx)
	if err := in.register(ctx); err != nil {
		in.grpc.Stop()
		endLife()
		_ = g.Wait()
		switch {
		case a.aborted.Err() != nil:
			return ErrAborted
		case ctx.Err() != nil:
			return nil // asked to stop before the worker ever joined
		}
		return err
	}
	close(a.registered)
	if in.health, err = health.Start(in.nc, health.Config{WorkerID: a.opts.ID, Version: a.opts.Version, Report: in.healthReport}); err != nil {
		return in.shutdown(endLife, g, fmt.Errorf("agent: %w", err))
	}
	g.Go(func() error { return in.watch.Run(gctx) })
	g.Go(func() error { return in.reg.KeepRegistered(gctx, in.onLeaseLost) })
	g.Go(func() error { in.reportEnded(gctx); return nil })
	g.Go(func() error { in.speech.Run(gctx); return nil })
	if sr, ok := a.rt.(runtime.SpeakingReporter); ok {
		g.Go(func() error { in.reportSpeaking(gctx, sr); return nil })
	}
	if rr, ok := a.rt.(runtime.RecordingReporter); ok {
		g.Go(func() error { in.reportRecordings(gctx, rr); return nil })
	}
	a.log.Info("worker running", "grpc", a.GRPCAddr(), "advertise", a.advertise, "devices", len(a.opts.Devices))

	select {
	case <-ctx.Done():
		in.drain(gctx)
		if a.aborted.Err() != nil {
			return in.abortNow(endLife, g)
		}
		return in.shutdown(endLife, g, nil)
	case <-a.aborted.Done():
		return in.abortNow(endLife, g)
	case <-gctx.Done():
		return in.shutdown(endLife, g, nil) // g.Wait reports the failure
	}
}

// connect opens the etcd and NATS connections (both retry in the
// background; neither needs its server up yet) and builds the components.
func (a *Agent) connect() (*instance, error) {
	etcdCfg := a.opts.Etcd
	if etcdCfg.DialTimeout == 0 {
		etcdCfg.DialTimeout = etcdDialTimeout
	}
	// fleetconn silences the client's own zap logs (they would bypass
	// slog); failures reach us as errors anyway.
	cli, err := fleetconn.Etcd(context.Background(), etcdCfg)
	if err != nil {
		return nil, fmt.Errorf("agent: etcd client for %s: %w", strings.Join(etcdCfg.Endpoints, ","), err)
	}
	log := a.log
	natsCfg := a.opts.NATS
	if natsCfg.Name == "" {
		natsCfg.Name = "avatarfleet-worker/" + a.opts.ID
	}
	// Replies come to the only inboxes a worker's NATS permissions let it read.
	natsCfg.InboxPrefix = fleetbus.WorkerInboxPrefix(a.opts.ID)
	nc, err := fleetconn.NATS(natsCfg,
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
	)
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	pub, err := fleetbus.NewPublisher(nc, fleetbus.AsWorker(a.opts.ID))
	if err != nil {
		nc.Close()
		_ = cli.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	in := &instance{Agent: a, cli: cli, nc: nc, events: &eventPublisher{pub: pub}}
	in.store = fleetstore.New(cli, fleetstore.NewKeys(a.opts.EtcdPrefix))
	in.watch = slotwatch.New(in.store, a.opts.ID, in.stopForSlot, a.log.With("component", "slotwatch"))
	in.speech = newSpeechAcks(in.store, a.log.With("component", "speech"))
	srv, err := server.New(server.Config{
		WorkerID:  a.opts.ID,
		Runtime:   a.rt,
		Slots:     in.watch,
		Accepting: func() bool { return !in.draining.Load() },
		Signaling: a.opts.Signaling,
		Speech:    in.speech,
		Previews:  a.opts.AvatarPreviews,
		Logger:    a.log.With("component", "grpc"),
	})
	if err == nil {
		var sopts []grpc.ServerOption
		if a.opts.TLS != nil {
			sopts = append(sopts, grpc.Creds(credentials.NewTLS(a.opts.TLS.WorkerServer())))
		}
		in.grpc = server.NewGRPC(srv, sopts...)
		in.reg, err = registration.New(registration.Config{
			Store: in.store,
			Worker: &fleetv1.Worker{
				Id:           a.opts.ID,
				GrpcAddress:  a.advertise,
				MediaAddress: a.media,
				Gpus:         a.opts.Devices,
				Version:      a.opts.Version,
				Avatars:      a.opts.Avatars,
				Voices:       a.opts.Voices,
				TtsEngine:    a.opts.TTSEngine,

				RecordingStore: a.opts.RecordingStore,
			},
			TTL:    a.opts.LeaseTTL,
			Logger: a.log.With("component", "registration"),
		})
	}
	if err != nil {
		in.closeConnections()
		return nil, fmt.Errorf("agent: %w", err)
	}
	return in, nil
}

func (in *instance) closeConnections() {
	in.nc.Close()
	_ = in.cli.Close()
}

// ensureStream creates the events stream when nobody has yet (a worker may
// start before any control plane). An existing stream is left as the
// control plane configured it: a worker may create the stream, never change
// it.
func (in *instance) ensureStream(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	st, err := fleetbus.CreateStreamIfMissing(ctx, in.events.pub.JetStream(), eventRetention)
	if err != nil {
		in.log.Warn("events stream unavailable; lifecycle events may be lost", "err", err)
		return
	}
	if kept := st.CachedInfo().Config.MaxBytes; kept < fleetbus.DefaultStreamMaxBytes {
		in.log.Warn("the events stream is smaller than the default: NATS could not reserve more of its store",
			"stream", fleetbus.StreamName, "kept_mib", kept>>20)
	}
}

// register retries until the worker record is written, ctx ends, Abort is
// called, or the id is held by another live worker.
func (in *instance) register(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(in.aborted, cancel)()
	backoff := 200 * time.Millisecond
	for {
		// An attempt may wait out a previous run's lease (TTL + 2s).
		attempt, cancelAttempt := context.WithTimeout(ctx, in.opts.LeaseTTL+stepTimeout)
		err := in.reg.Register(attempt)
		cancelAttempt()
		if err == nil {
			return nil
		}
		if errors.Is(err, registration.ErrIDInUse) || ctx.Err() != nil {
			return fmt.Errorf("agent: %w", err)
		}
		in.log.Warn("registration failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("agent: register: %w", ctx.Err())
		}
		backoff = min(2*backoff, maxRegisterBackoff)
	}
}

func (in *instance) healthReport() health.Report {
	st := fleetv1.WorkerState_WORKER_STATE_ACTIVE
	if in.draining.Load() {
		st = fleetv1.WorkerState_WORKER_STATE_DRAINING
	}
	return health.Report{ID: in.opts.ID, State: health.StateName(st), Sessions: len(in.rt.Sessions()), Version: in.opts.Version}
}

// drain refuses new sessions, marks the record DRAINING, waits for the
// sessions to end (until DrainTimeout) and ends the rest with reason drained.
func (in *instance) drain(ctx context.Context) {
	in.draining.Store(true)
	in.log.Info("draining", "sessions", len(in.rt.Sessions()), "timeout", in.opts.DrainTimeout)
	// The control plane's migrator moves the sessions where it finds room;
	// what it cannot move ends at the deadline as before.
	in.reg.SetMigrate(!in.opts.NoDrainMigration && len(in.rt.Sessions()) > 0)
	stateCtx, cancel := context.WithTimeout(ctx, stepTimeout)
	if err := in.reg.SetState(stateCtx, fleetv1.WorkerState_WORKER_STATE_DRAINING); err != nil {
		in.log.Warn("could not mark the worker draining in etcd", "err", err)
	}
	cancel()
	deadline := time.NewTimer(in.opts.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
wait:
	for len(in.rt.Sessions()) > 0 {
		select {
		case <-deadline.C:
			break wait
		case <-tick.C:
		case <-in.aborted.Done():
			return
		case <-ctx.Done():
			break wait
		}
	}
	left := in.rt.Sessions()
	if len(left) > 0 {
		in.log.Info("drain deadline passed; ending sessions", "sessions", len(left))
	}
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stepTimeout)
	defer cancel()
	for _, id := range left {
		in.endSession(endCtx, id, fleetv1.SessionState_SESSION_STATE_ENDED, fleetv1.EndReason_END_REASON_DRAINED, "worker drained")
	}
}

// shutdown ends what is left, deregisters (the lease and every slot go at
// once), stops health and gRPC, and waits for every goroutine. cause is a
// failure that led here (nil for a requested shutdown).
func (in *instance) shutdown(endLife context.CancelFunc, g *errgroup.Group, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	in.draining.Store(true)
	for _, id := range in.rt.Sessions() {
		// Only a failed worker gets here with sessions left.
		in.endSession(ctx, id, fleetv1.SessionState_SESSION_STATE_FAILED, fleetv1.EndReason_END_REASON_ERROR, "worker failed")
	}
	if err := in.reg.Deregister(ctx); err != nil {
		in.log.Warn("deregister failed; the lease expires on its own", "err", err)
	}
	in.stopHealth()
	in.stopGRPC()
	endLife()
	err := errors.Join(cause, g.Wait())
	if err != nil {
		in.log.Error("worker stopped after a failure", "err", err)
		return err
	}
	in.log.Info("worker stopped")
	return nil
}

// abortNow stops like a crash: the lease is left to expire.
func (in *instance) abortNow(endLife context.CancelFunc, g *errgroup.Group) error {
	in.log.Warn("aborting: no drain, lease left to expire")
	in.reg.Abandon()
	in.stopHealth()
	in.grpc.Stop()
	endLife()
	_ = g.Wait()
	return ErrAborted
}

func (in *instance) stopHealth() {
	if in.health != nil {
		if err := in.health.Stop(); err != nil {
			in.log.Warn("stop health service", "err", err)
		}
	}
}

// stopGRPC lets calls in flight finish, within a bound.
func (in *instance) stopGRPC() {
	done := make(chan struct{})
	go func() {
		in.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grpcStopTimeout):
		in.grpc.Stop()
		<-done
	}
}

// eventPublisher bounds event publishing: events are best effort (etcd
// holds the truth), and a NATS outage must not stall the worker. It runs
// even when ctx has ended, so the events of a shutdown still go out.
type eventPublisher struct {
	pub *fleetbus.Publisher
}

func (p *eventPublisher) Publish(ctx context.Context, e *fleetv1.Event) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	return p.pub.Publish(ctx, e)
}
