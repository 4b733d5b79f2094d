package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/avatarfleet/avatarfleet/controlplane/pkg/apiv1"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/auth"
	"github.com/avatarfleet/avatarfleet/controlplane/pkg/registry"
	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
)

const (
	testSessionsKey = "catalog-sessions-key-0123456789"
	testAdminKey    = "catalog-admin-key-0123456789"
)

// fakeFleet is a FleetView over fixed worker views.
type fakeFleet []registry.WorkerView

func (f fakeFleet) Workers() []registry.WorkerView { return f }

// view is a worker view: slots per GPU (index i has slots[i]), used per
// GPU, and its advertisements.
func view(id string, slots, used []int, avatars, voices []string, engine string) registry.WorkerView {
	w := &fleetv1.Worker{Id: id, GrpcAddress: "127.0.0.1:1", Avatars: avatars, Voices: voices, TtsEngine: engine,
		State: fleetv1.WorkerState_WORKER_STATE_ACTIVE}
	per := map[uint32]int{}
	n := 0
	for i, s := range slots {
		w.Gpus = append(w.Gpus, &fleetv1.GPU{Index: uint32(i), Slots: uint32(s)})
		if i < len(used) && used[i] > 0 {
			per[uint32(i)] = used[i]
			n += used[i]
		}
	}
	return registry.WorkerView{Worker: w, UsedPerGPU: per, Sessions: n}
}

func down(v registry.WorkerView) registry.WorkerView { v.Down = true; return v }

func drained(v registry.WorkerView) registry.WorkerView { v.Drained = true; return v }

func unspecified(v registry.WorkerView) registry.WorkerView {
	v.Worker.State = fleetv1.WorkerState_WORKER_STATE_UNSPECIFIED
	return v
}

func selfDraining(v registry.WorkerView) registry.WorkerView {
	v.Worker.State = fleetv1.WorkerState_WORKER_STATE_DRAINING
	return v
}

func TestAvatarCatalog(t *testing.T) {
	const base = "https://cp.example/v1/avatars"
	tests := []struct {
		name  string
		views []registry.WorkerView
		want  []apiv1.Avatar
	}{
		{"empty fleet", nil, []apiv1.Avatar{}},
		{"one worker", []registry.WorkerView{view("w1", []int{2}, []int{1}, []string{"default"}, nil, "")},
			[]apiv1.Avatar{{Name: "default", Workers: 1, Slots: 2, FreeSlots: 1, PreviewURL: base + "/default/preview"}}},
		{"two workers aggregated, sorted by name", []registry.WorkerView{
			view("w1", []int{2, 2}, []int{2, 1}, []string{"zoe", "default"}, nil, ""),
			view("w2", []int{4}, nil, []string{"default", "bob"}, nil, ""),
		}, []apiv1.Avatar{
			{Name: "bob", Workers: 1, Slots: 4, FreeSlots: 4, PreviewURL: base + "/bob/preview"},
			{Name: "default", Workers: 2, Slots: 8, FreeSlots: 5, PreviewURL: base + "/default/preview"},
			{Name: "zoe", Workers: 1, Slots: 4, FreeSlots: 1, PreviewURL: base + "/zoe/preview"},
		}},
		{"down, admin-drained and self-draining workers left out", []registry.WorkerView{
			down(view("w1", []int{2}, nil, []string{"a"}, nil, "")),
			drained(view("w2", []int{2}, nil, []string{"b"}, nil, "")),
			selfDraining(view("w3", []int{2}, nil, []string{"c"}, nil, "")),
			view("w4", []int{1}, nil, []string{"d"}, nil, ""),
		}, []apiv1.Avatar{{Name: "d", Workers: 1, Slots: 1, FreeSlots: 1, PreviewURL: base + "/d/preview"}}},
		{"duplicates counted once, invalid names dropped", []registry.WorkerView{
			view("w1", []int{1}, nil, []string{"x", "x", "../etc", "", "a/b"}, nil, ""),
		}, []apiv1.Avatar{{Name: "x", Workers: 1, Slots: 1, FreeSlots: 1, PreviewURL: base + "/x/preview"}}},
		{"a worker that advertises nothing serves the default (as placement reads it)", []registry.WorkerView{
			view("w1", []int{1}, nil, nil, nil, ""),
		}, []apiv1.Avatar{{Name: "default", Workers: 1, Slots: 1, FreeSlots: 1, PreviewURL: base + "/default/preview"}}},
		{"a worker not yet active is left out", []registry.WorkerView{
			unspecified(view("w1", []int{1}, nil, []string{"x"}, nil, "")),
		}, []apiv1.Avatar{}},
		{"over-reserved GPU has no free slots, never negative", []registry.WorkerView{
			view("w1", []int{1}, []int{3}, []string{"x"}, nil, ""),
		}, []apiv1.Avatar{{Name: "x", Workers: 1, Slots: 1, FreeSlots: 0, PreviewURL: base + "/x/preview"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := avatarCatalog(tt.views, base)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestVoiceCatalog(t *testing.T) {
	tests := []struct {
		name  string
		views []registry.WorkerView
		want  []apiv1.Voice
	}{
		{"empty fleet", nil, []apiv1.Voice{}},
		{"engines merged and sorted, unknown engine left out", []registry.WorkerView{
			view("w1", []int{1}, nil, nil, []string{"default", "en-us"}, "espeak"),
			view("w2", []int{1}, nil, nil, []string{"default", "alloy"}, "http"),
			view("w3", []int{1}, nil, nil, []string{"default"}, ""),
		}, []apiv1.Voice{
			{Name: "alloy", Engines: []string{"http"}, Workers: 1},
			{Name: "default", Engines: []string{"espeak", "http"}, Workers: 3},
			{Name: "en-us", Engines: []string{"espeak"}, Workers: 1},
		}},
		{"inactive workers left out", []registry.WorkerView{
			down(view("w1", []int{1}, nil, nil, []string{"a"}, "espeak")),
			drained(view("w2", []int{1}, nil, nil, []string{"b"}, "espeak")),
			view("w3", []int{1}, nil, nil, []string{"c", "c"}, ""),
		}, []apiv1.Voice{{Name: "c", Workers: 1}}},
		{"a worker that advertises nothing offers the default voice", []registry.WorkerView{
			view("w1", []int{1}, nil, nil, nil, "espeak"),
		}, []apiv1.Voice{{Name: "default", Engines: []string{"espeak"}, Workers: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := voiceCatalog(tt.views)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func catalogAPI(t *testing.T, fleet FleetView, clients WorkerClients) *API {
	t.Helper()
	keys := &auth.Keys{}
	if err := keys.Add(testSessionsKey, auth.ScopeSessions); err != nil {
		t.Fatal(err)
	}
	if err := keys.Add(testAdminKey, auth.ScopeAdmin); err != nil {
		t.Fatal(err)
	}
	return New(Options{Keys: keys, Fleet: fleet, WorkerClients: clients, PublicURL: "https://cp.example"})
}

// TestCatalogRoutes: the routes need a key with the sessions scope (admin
// implies it) and answer the aggregated lists as JSON.
func TestCatalogRoutes(t *testing.T) {
	fleet := fakeFleet{
		view("w1", []int{2}, nil, []string{"default", "bob"}, []string{"default"}, "espeak"),
		view("w2", []int{2}, []int{1}, []string{"default"}, []string{"default", "en-gb"}, "espeak"),
	}
	a := catalogAPI(t, fleet, nil)
	tests := []struct {
		path, key string
		status    int
		code      string
		body      any
	}{
		{"/v1/avatars", "", http.StatusUnauthorized, apiv1.CodeUnauthorized, nil},
		{"/v1/avatars", "wrong-key-0123456789abcdef", http.StatusUnauthorized, apiv1.CodeUnauthorized, nil},
		{"/v1/voices", "", http.StatusUnauthorized, apiv1.CodeUnauthorized, nil},
		{"/v1/avatars/bob/preview", "", http.StatusUnauthorized, apiv1.CodeUnauthorized, nil},
		{"/v1/avatars", testSessionsKey, http.StatusOK, "", apiv1.AvatarList{Avatars: []apiv1.Avatar{
			{Name: "bob", Workers: 1, Slots: 2, FreeSlots: 2, PreviewURL: "https://cp.example/v1/avatars/bob/preview"},
			{Name: "default", Workers: 2, Slots: 4, FreeSlots: 3, PreviewURL: "https://cp.example/v1/avatars/default/preview"},
		}}},
		{"/v1/voices", testAdminKey, http.StatusOK, "", apiv1.VoiceList{Voices: []apiv1.Voice{
			{Name: "default", Engines: []string{"espeak"}, Workers: 2},
			{Name: "en-gb", Engines: []string{"espeak"}, Workers: 1},
		}}},
		{"/v1/avatars/bob/preview", testSessionsKey, http.StatusServiceUnavailable, apiv1.CodeUnavailable, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path+" "+tt.key, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, tt.path, nil)
			if tt.key != "" {
				r.Header.Set("Authorization", "Bearer "+tt.key)
			}
			a.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.code != "" {
				var eb apiv1.ErrorBody
				if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code != tt.code {
					t.Fatalf("error body %s (%v), want code %s", w.Body, err, tt.code)
				}
				return
			}
			got := reflect.New(reflect.TypeOf(tt.body))
			dec := json.NewDecoder(w.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(got.Interface()); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Elem().Interface(), tt.body) {
				t.Fatalf("got %+v\nwant %+v", got.Elem().Interface(), tt.body)
			}
		})
	}
}
