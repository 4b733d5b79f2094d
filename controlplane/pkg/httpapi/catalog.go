package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"sort"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/sessions"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// FleetView is the part of the registry the catalogue (GET /v1/avatars,
// GET /v1/voices) and the avatar previews read: every registered worker.
type FleetView interface {
	Workers() []registry.WorkerView
}

// fleet is the catalogue's view of the fleet: Options.Fleet, else the
// registry.
func (a *API) fleet() FleetView {
	if a.opts.Fleet != nil {
		return a.opts.Fleet
	}
	return a.opts.Registry
}

// catalogWorker reports whether a worker's advertisements count: the
// workers placement would consider for a new session (registered, active,
// healthy, not drained by an admin). A catalogue lists what a new session
// can get.
func catalogWorker(v registry.WorkerView) bool {
	return v.Worker != nil && !v.Down && !v.Draining() && v.Worker.GetState() == fleetv1.WorkerState_WORKER_STATE_ACTIVE
}

// advertised is a worker's list of names as placement reads it: a worker
// that advertises none serves the default only.
func advertised(names []string) []string {
	if len(names) == 0 {
		return []string{sessions.DefaultAvatar}
	}
	return names
}

// advertisedVoices is advertised for voices.
func advertisedVoices(names []string) []string {
	if len(names) == 0 {
		return []string{sessions.DefaultVoice}
	}
	return names
}

// slotsOf sums a worker's session slots and the ones not reserved.
func slotsOf(v registry.WorkerView) (slots, free int) {
	for _, g := range v.Worker.GetGpus() {
		n := int(g.GetSlots())
		slots += n
		free += max(0, n-v.UsedOn(g.GetIndex()))
	}
	return slots, free
}

// avatarCatalog aggregates the avatars of the active workers, sorted by
// name; previewBase + "/" + escaped name + "/preview" is each preview URL.
func avatarCatalog(views []registry.WorkerView, previewBase string) []apiv1.Avatar {
	by := map[string]*apiv1.Avatar{}
	for _, v := range views {
		if !catalogWorker(v) {
			continue
		}
		slots, free := slotsOf(v)
		for _, name := range uniqueNames(advertised(v.Worker.GetAvatars())) {
			av := by[name]
			if av == nil {
				av = &apiv1.Avatar{Name: name, PreviewURL: previewBase + "/" + url.PathEscape(name) + "/preview"}
				by[name] = av
			}
			av.Workers++
			av.Slots += slots
			av.FreeSlots += free
		}
	}
	out := make([]apiv1.Avatar, 0, len(by))
	for _, av := range by {
		out = append(out, *av)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// voiceCatalog aggregates the voices of the active workers, sorted by name.
func voiceCatalog(views []registry.WorkerView) []apiv1.Voice {
	by := map[string]*apiv1.Voice{}
	for _, v := range views {
		if !catalogWorker(v) {
			continue
		}
		engine := v.Worker.GetTtsEngine()
		for _, name := range uniqueNames(advertisedVoices(v.Worker.GetVoices())) {
			vc := by[name]
			if vc == nil {
				vc = &apiv1.Voice{Name: name}
				by[name] = vc
			}
			vc.Workers++
			if engine != "" && !slices.Contains(vc.Engines, engine) {
				vc.Engines = append(vc.Engines, engine)
			}
		}
	}
	out := make([]apiv1.Voice, 0, len(by))
	for _, vc := range by {
		sort.Strings(vc.Engines)
		out = append(out, *vc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// uniqueNames drops duplicates and names a client could not use (the
// worker record is the worker's word; the API keeps to valid names).
func uniqueNames(names []string) []string {
	seen := make(map[string]bool, len(names))
	out := names[:0:0]
	for _, n := range names {
		if !fleetstore.ValidName(n) || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out
}

func (a *API) listAvatars(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	out := apiv1.AvatarList{Avatars: avatarCatalog(a.fleet().Workers(), a.baseURL(r)+"/v1/avatars")}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) listVoices(w http.ResponseWriter, _ *http.Request, _ auth.Principal) error {
	writeJSON(w, http.StatusOK, apiv1.VoiceList{Voices: voiceCatalog(a.fleet().Workers())})
	return nil
}
