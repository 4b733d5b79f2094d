// Package health answers the control plane's health checks over NATS. A
// worker runs one NATS micro service (fleetbus.HealthServiceName) with one
// endpoint on fleetbus.HealthSubject(<worker id>); micro adds PING, INFO
// and STATS on $SRV subjects. The control plane requests the endpoint
// periodically and marks a worker down when it stops answering, so the
// answer comes straight from the worker's live state.
package health

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetbus"
)

// ProtocolVersion is the version of the health endpoint's reply format (the
// micro service's semver), not the worker's build.
const ProtocolVersion = "1.0.0"

// EndpointName is the health endpoint's name in the service's INFO.
const EndpointName = "health"

// Report is the JSON reply of the health endpoint.
type Report struct {
	ID string `json:"id"`
	// State is "active" or "draining".
	State string `json:"state"`
	// Sessions is the number of sessions running on the worker.
	Sessions int    `json:"sessions"`
	Version  string `json:"version"`
}

// StateName is the lower-case name the REST API and health reports use for
// a worker state ("active", "draining", "down").
func StateName(s fleetv1.WorkerState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "WORKER_STATE_"))
}

// Config configures the health service.
type Config struct {
	WorkerID string
	// Version is the worker's build version, shown in INFO metadata.
	Version string
	// Report builds the reply; it is called for every request, so it must be
	// cheap and safe for concurrent use.
	Report func() Report
}

// flushTimeout bounds Start's wait for the server to acknowledge the
// endpoint's subscription.
const flushTimeout = 5 * time.Second

// Start registers the health service on nc; the caller stops it with Stop.
func Start(nc *nats.Conn, cfg Config) (micro.Service, error) {
	if nc == nil || cfg.Report == nil || cfg.WorkerID == "" {
		return nil, errors.New("health: connection, worker id and report are required")
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        fleetbus.HealthServiceName,
		Version:     ProtocolVersion,
		Description: "AvatarFleet worker health",
		Metadata:    map[string]string{"worker": cfg.WorkerID, "version": cfg.Version},
	})
	if err != nil {
		return nil, fmt.Errorf("health: start micro service: %w", err)
	}
	handler := micro.HandlerFunc(func(req micro.Request) {
		b, err := json.Marshal(cfg.Report())
		if err != nil {
			_ = req.Error("500", "encode health report", nil)
			return
		}
		_ = req.Respond(b)
	})
	// Only this worker listens on its subject; without a queue group a
	// misconfigured duplicate id shows up as two replies instead of hiding.
	if err := svc.AddEndpoint(EndpointName, handler,
		micro.WithEndpointSubject(fleetbus.HealthSubject(cfg.WorkerID)),
		micro.WithEndpointQueueGroupDisabled()); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("health: add endpoint: %w", err)
	}
	// Subscriptions reach the server asynchronously: flush so a request
	// sent right after Start (from any connection) finds the endpoint. A
	// connection that is down sends them on reconnecting instead.
	if err := nc.FlushTimeout(flushTimeout); err != nil && nc.IsConnected() {
		_ = svc.Stop()
		return nil, fmt.Errorf("health: flush the endpoint's subscription: %w", err)
	}
	return svc, nil
}
