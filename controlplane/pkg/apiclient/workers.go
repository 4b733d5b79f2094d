package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
)

// ListWorkers returns the fleet's workers (GET /v1/workers; admin scope).
// The slice is never nil.
func (c *Client) ListWorkers(ctx context.Context) ([]apiv1.Worker, error) {
	var l apiv1.WorkerList
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/workers", out: &l}); err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	if l.Workers == nil {
		l.Workers = []apiv1.Worker{}
	}
	return l.Workers, nil
}

// GetWorker returns one worker (GET /v1/workers/{id}; admin scope).
func (c *Client) GetWorker(ctx context.Context, id string) (*apiv1.Worker, error) {
	p, err := pathID("worker", id)
	if err != nil {
		return nil, fmt.Errorf("get worker: %w", err)
	}
	var w apiv1.Worker
	if _, err := c.do(ctx, call{method: http.MethodGet, path: "/v1/workers/" + p, out: &w}); err != nil {
		return nil, fmt.Errorf("get worker %q: %w", id, err)
	}
	return &w, nil
}

// DrainWorker stops placement on a worker (POST /v1/workers/{id}/drain;
// admin scope); its live sessions end on their own. It returns the worker
// when the response carries it (state draining), nil when the body is
// empty or is not a Worker.
func (c *Client) DrainWorker(ctx context.Context, id string) (*apiv1.Worker, error) {
	w, err := c.workerAction(ctx, id, "drain")
	if err != nil {
		return nil, fmt.Errorf("drain worker %q: %w", id, err)
	}
	return w, nil
}

// DrainWorkerMigrate drains a worker and asks that its live sessions move
// to other workers (POST /v1/workers/{id}/drain with {"migrate": true}).
func (c *Client) DrainWorkerMigrate(ctx context.Context, id string) (*apiv1.Worker, error) {
	body, err := json.Marshal(apiv1.DrainRequest{Migrate: true})
	if err != nil {
		return nil, fmt.Errorf("drain worker %q: %w", id, err)
	}
	w, err := c.workerActionBody(ctx, id, "drain", body)
	if err != nil {
		return nil, fmt.Errorf("drain worker %q with migration: %w", id, err)
	}
	return w, nil
}

// UndrainWorker reopens a drained worker to placement (POST
// /v1/workers/{id}/undrain; admin scope). It returns the worker when the
// response carries it, nil when the body is empty or is not a Worker.
func (c *Client) UndrainWorker(ctx context.Context, id string) (*apiv1.Worker, error) {
	w, err := c.workerAction(ctx, id, "undrain")
	if err != nil {
		return nil, fmt.Errorf("undrain worker %q: %w", id, err)
	}
	return w, nil
}

// workerAction POSTs /v1/workers/{id}/{action} with no body.
func (c *Client) workerAction(ctx context.Context, id, action string) (*apiv1.Worker, error) {
	return c.workerActionBody(ctx, id, action, nil)
}

// workerActionBody POSTs /v1/workers/{id}/{action} with a JSON body (none
// when body is nil).
func (c *Client) workerActionBody(ctx context.Context, id, action string, body []byte) (*apiv1.Worker, error) {
	p, err := pathID("worker", id)
	if err != nil {
		return nil, err
	}
	cl := call{method: http.MethodPost, path: "/v1/workers/" + p + "/" + action}
	if body != nil {
		cl.body, cl.contentType = bytes.NewReader(body), "application/json"
	}
	var w apiv1.Worker
	cl.out, cl.optionalBody = &w, true
	filled, err := c.do(ctx, cl)
	if err != nil || !filled || w.ID == "" {
		// An empty body, or one that is not a Worker (a bare status
		// object, say), carries no worker: report none rather than a
		// zero Worker whose 0 sessions would read as "drained".
		return nil, err
	}
	return &w, nil
}
