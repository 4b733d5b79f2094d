package httpapi

import (
	"net/http"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

func (a *API) listWorkers(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	out := apiv1.WorkerList{Workers: []apiv1.Worker{}}
	for _, v := range a.opts.Registry.Workers() {
		out.Workers = append(out.Workers, toWorker(v))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) workerView(id string) (registry.WorkerView, error) {
	if !fleetstore.ValidName(id) {
		return registry.WorkerView{}, errorf(http.StatusNotFound, apiv1.CodeNotFound, "no worker %q", id)
	}
	v, ok := a.opts.Registry.Worker(id)
	if !ok {
		return v, errorf(http.StatusNotFound, apiv1.CodeNotFound, "no worker %q", id)
	}
	return v, nil
}

func (a *API) getWorker(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	v, err := a.workerView(r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toWorker(v))
	return nil
}

// drainWorker answers POST /v1/workers/{id}/drain: no new sessions on the
// worker. The body is optional; {"migrate": true} also asks the leader's
// migrator to move the worker's live sessions elsewhere, one by one.
func (a *API) drainWorker(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var req apiv1.DrainRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	v, err := a.workerView(r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := a.opts.Store.SetDrainMark(r.Context(), v.Worker.GetId(), req.Migrate); err != nil {
		return err
	}
	v.Drained, v.Migrate = true, req.Migrate
	writeJSON(w, http.StatusAccepted, toWorker(v))
	return nil
}

func (a *API) undrainWorker(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	v, err := a.workerView(r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := a.opts.Store.SetDrained(r.Context(), v.Worker.GetId(), false); err != nil {
		return err
	}
	v.Drained = false
	writeJSON(w, http.StatusOK, toWorker(v))
	return nil
}
