// Package registry keeps a control plane's read-only cache of the fleet:
// workers, their slot reservations, drain and health marks. It lists the
// fleet/ prefix of etcd once and then follows a watch, so placement ranks
// candidates without a read per request. The cache may lag etcd by a watch
// round trip; placement's transaction, not the cache, guarantees safety.
package registry

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	fleetv1 "github.com/avatarfleet/avatarfleet/proto/fleet/v1"
	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// SlotRef names one slot of one GPU.
type SlotRef struct {
	GPU  uint32
	Slot uint32
}

// WorkerView is a worker as the cache sees it. It is a small copy: the
// reserved slots themselves stay in the cache (see FreeSlot), so taking a
// snapshot costs the same however many sessions the fleet runs.
type WorkerView struct {
	Worker   *fleetv1.Worker
	Lease    clientv3.LeaseID
	Revision int64 // ModRevision of the worker record
	Drained  bool  // an admin drained it
	// Migrate: the admin's drain asks that live sessions move elsewhere.
	Migrate bool
	Down    bool // it failed health checks
	// UsedPerGPU counts the reserved slots of each GPU; Sessions is their sum.
	UsedPerGPU map[uint32]int
	Sessions   int
}

// Draining reports whether the worker takes no new sessions by its own wish
// or an admin's.
func (w WorkerView) Draining() bool {
	return w.Drained || w.Worker.GetState() == fleetv1.WorkerState_WORKER_STATE_DRAINING
}

// UsedOn counts the slots reserved on one GPU.
func (w WorkerView) UsedOn(gpu uint32) int { return w.UsedPerGPU[gpu] }

// TakesSessions reports whether the worker may be given a session now:
// active, neither draining nor down. Placement and migration both ask.
func (w WorkerView) TakesSessions() bool {
	return !w.Draining() && !w.Down && w.Worker.GetState() == fleetv1.WorkerState_WORKER_STATE_ACTIVE
}

// ServesAvatar and ServesVoice report whether the worker advertises a name;
// one that advertises none serves the default only, and "" is the default.
func (w WorkerView) ServesAvatar(name string) bool { return serves(w.Worker.GetAvatars(), name) }

// ServesVoice: see ServesAvatar.
func (w WorkerView) ServesVoice(name string) bool { return serves(w.Worker.GetVoices(), name) }

// Default is the name of the avatar and of the voice a create that names
// none gets, and all a worker that advertises none serves.
const Default = "default"

func serves(names []string, name string) bool {
	if name == "" {
		name = Default
	}
	if len(names) == 0 {
		return name == Default
	}
	return slices.Contains(names, name)
}

// TotalSlots is the number of slots over the worker's GPUs.
func (w WorkerView) TotalSlots() int {
	n := 0
	for _, g := range w.Worker.GetGpus() {
		n += int(g.GetSlots())
	}
	return n
}

type entry struct {
	worker   *fleetv1.Worker
	lease    clientv3.LeaseID
	revision int64
	drained  bool
	migrate  bool
	down     bool
	used     map[SlotRef]string
	perGPU   map[uint32]int
}

func (e *entry) view() WorkerView {
	per := make(map[uint32]int, len(e.perGPU))
	for k, v := range e.perGPU {
		per[k] = v
	}
	return WorkerView{Worker: e.worker, Lease: e.lease, Revision: e.revision, Drained: e.drained, Migrate: e.migrate, Down: e.down,
		UsedPerGPU: per, Sessions: len(e.used)}
}

func (e *entry) reserve(ref SlotRef, session string) {
	if _, ok := e.used[ref]; !ok {
		e.perGPU[ref.GPU]++
	}
	e.used[ref] = session
}

func (e *entry) release(ref SlotRef) {
	if _, ok := e.used[ref]; ok {
		delete(e.used, ref)
		if e.perGPU[ref.GPU]--; e.perGPU[ref.GPU] <= 0 {
			delete(e.perGPU, ref.GPU)
		}
	}
}

func (e *entry) empty() bool {
	return e.worker == nil && !e.drained && !e.down && len(e.used) == 0
}

// Registry is the watched cache. Run fills it; the other methods read it.
type Registry struct {
	store *fleetstore.Store
	keys  fleetstore.Keys
	log   *slog.Logger

	mu       sync.RWMutex
	entries  map[string]*entry
	revision int64
	// slotsAt is the revision of the last ConfirmSlots read applied: slot
	// events of the watch at or before it are already in the cache.
	slotsAt  int64
	synced   chan struct{}
	syncOnce sync.Once
	onGone   []func(worker string)

	confirmMu   sync.Mutex
	confirmedAt time.Time
}

// New returns an empty registry over store; call Run to fill it.
func New(store *fleetstore.Store, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{store: store, keys: store.Keys(), log: log, entries: map[string]*entry{}, synced: make(chan struct{})}
}

// OnWorkerGone registers f to be called (from Run's goroutine, outside the
// cache's lock) with the id of each worker whose record disappears, e.g. to
// close connections to it. Call it before Run.
func (r *Registry) OnWorkerGone(f func(worker string)) { r.onGone = append(r.onGone, f) }

// Synced is closed once the first full listing is in the cache.
func (r *Registry) Synced() <-chan struct{} { return r.synced }

// Run lists the fleet and follows the watch until ctx ends (fleetstore's
// ListWatch: when the watch falls behind compaction or breaks, it lists
// again).
func (r *Registry) Run(ctx context.Context) error {
	return r.store.ListWatch(ctx, fleetstore.ListWatchOptions{
		Prefixes: []string{r.keys.Fleet()},
		Name:     "registry",
		Log:      r.log,
	}, fleetstore.HandlerFuncs{ReplaceFunc: r.replace, ApplyFunc: r.apply})
}

func (r *Registry) replace(_ context.Context, kvs []fleetstore.KV, rev int64) {
	entries := map[string]*entry{}
	for _, kv := range kvs {
		applyPut(r.keys, entries, kv, r.log)
	}
	r.mu.Lock()
	var gone []string
	for id, e := range r.entries {
		if e.worker != nil && (entries[id] == nil || entries[id].worker == nil) {
			gone = append(gone, id)
		}
	}
	r.entries = entries
	r.revision = rev
	r.slotsAt = 0 // the listing is the truth; every later event applies
	r.mu.Unlock()
	r.syncOnce.Do(func() { close(r.synced) })
	r.notifyGone(gone)
}

func (r *Registry) apply(_ context.Context, events []fleetstore.Event, rev int64) {
	var gone []string
	r.mu.Lock()
	for _, ev := range events {
		if ev.KV.ModRevision > 0 && ev.KV.ModRevision <= r.slotsAt && r.isSlot(ev.KV.Key) {
			continue // ConfirmSlots read this slot at a later revision
		}
		switch ev.Type {
		case fleetstore.EventPut:
			applyPut(r.keys, r.entries, ev.KV, r.log)
		case fleetstore.EventDelete:
			if id, ok := applyDelete(r.keys, r.entries, ev.KV); ok {
				gone = append(gone, id)
			}
		}
	}
	r.revision = rev
	r.mu.Unlock()
	r.notifyGone(gone)
}

func (r *Registry) isSlot(key string) bool {
	pk, err := r.keys.Parse(key)
	return err == nil && pk.Kind == fleetstore.KindSlot
}

func (r *Registry) notifyGone(ids []string) {
	for _, id := range ids {
		for _, f := range r.onGone {
			f(id)
		}
	}
}

func getEntry(entries map[string]*entry, id string) *entry {
	e := entries[id]
	if e == nil {
		e = &entry{used: map[SlotRef]string{}, perGPU: map[uint32]int{}}
		entries[id] = e
	}
	return e
}

func applyPut(keys fleetstore.Keys, entries map[string]*entry, kv fleetstore.KV, log *slog.Logger) {
	pk, err := keys.Parse(kv.Key)
	if err != nil || pk.Kind == fleetstore.KindUnknown {
		return
	}
	e := getEntry(entries, pk.Worker)
	switch pk.Kind {
	case fleetstore.KindWorker:
		w, err := fleetstore.DecodeWorker(kv.Value)
		if err != nil {
			log.Warn("skip undecodable worker record", "key", kv.Key, "err", err)
			return
		}
		e.worker, e.lease, e.revision = w, clientv3.LeaseID(kv.Lease), kv.ModRevision
	case fleetstore.KindSlot:
		e.reserve(SlotRef{GPU: pk.GPU, Slot: pk.Slot}, string(kv.Value))
	case fleetstore.KindDrain:
		e.drained, e.migrate = true, string(kv.Value) == fleetstore.DrainMigrate
	case fleetstore.KindHealth:
		e.down = true
	}
}

// applyDelete applies a deletion; gone is true when it removed a worker's
// record.
func applyDelete(keys fleetstore.Keys, entries map[string]*entry, kv fleetstore.KV) (worker string, gone bool) {
	pk, err := keys.Parse(kv.Key)
	if err != nil || pk.Kind == fleetstore.KindUnknown {
		return "", false
	}
	e := entries[pk.Worker]
	if e == nil {
		return "", false
	}
	switch pk.Kind {
	case fleetstore.KindWorker:
		gone = e.worker != nil
		e.worker, e.lease, e.revision = nil, 0, 0
	case fleetstore.KindSlot:
		e.release(SlotRef{GPU: pk.GPU, Slot: pk.Slot})
	case fleetstore.KindDrain:
		e.drained, e.migrate = false, false
	case fleetstore.KindHealth:
		e.down = false
	}
	if e.empty() {
		delete(entries, pk.Worker)
	}
	return pk.Worker, gone
}

// NoteReserved records a reservation this replica just committed, so its
// next placement does not try the slot before the watch reports it.
func (r *Registry) NoteReserved(worker string, ref SlotRef, sessionID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[worker]; e != nil && e.worker != nil {
		e.reserve(ref, sessionID)
	}
}

// NoteReleased records a release this replica just committed (a delete, a
// reservation undone), so its next placement may use the slot before the
// watch reports it. Without it, a replica whose watch lags (after an etcd
// leader's loss it can be silent for seconds) saw its own creates fill
// the fleet while its own deletes stayed invisible, and answered
// no_capacity with the slots free. The slot is freed only while the cache
// still gives it to sessionID: a newer reservation is left alone, and a
// late watch event re-marking the slot is undone by the delete event
// that follows it.
func (r *Registry) NoteReleased(worker string, ref SlotRef, sessionID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[worker]; e != nil && e.used[ref] == sessionID {
		e.release(ref)
	}
}

// FreeSlot finds a slot of one GPU that the cache sees free and skip does
// not exclude. It probes from a random start (start in [0, slots)) so
// replicas racing with the same view mostly pick different slots; on a
// sparsely used GPU it returns after a probe or two.
func (r *Registry) FreeSlot(worker string, gpu uint32, slots int, start int, skip func(slot uint32) bool) (uint32, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[worker]
	if e == nil || slots <= 0 {
		return 0, false
	}
	for i := range slots {
		s := uint32((start + i) % slots)
		if _, used := e.used[SlotRef{GPU: gpu, Slot: s}]; used || skip(s) {
			continue
		}
		return s, true
	}
	return 0, false
}

// Workers returns every registered worker, sorted by id.
func (r *Registry) Workers() []WorkerView {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]WorkerView, 0, len(r.entries))
	for _, e := range r.entries {
		if e.worker != nil {
			out = append(out, e.view())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Worker.GetId() < out[j].Worker.GetId() })
	return out
}

// Worker returns one registered worker.
func (r *Registry) Worker(id string) (WorkerView, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[id]
	if e == nil || e.worker == nil {
		return WorkerView{}, false
	}
	return e.view(), true
}

// Revision is the etcd revision the cache reflects.
func (r *Registry) Revision() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.revision
}
