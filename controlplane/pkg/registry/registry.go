// Package registry keeps a control plane's read-only cache of the fleet:
// workers, their slot reservations, drain and health marks. It lists the
// fleet/ prefix of etcd once and then follows a watch, so placement ranks
// candidates without a read per request. The cache may lag etcd by a watch
// round trip; placement's transaction, not the cache, guarantees safety.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
	cli  *clientv3.Client
	keys fleetstore.Keys
	log  *slog.Logger

	mu       sync.RWMutex
	entries  map[string]*entry
	revision int64
	synced   chan struct{}
	syncOnce sync.Once
}

// New returns an empty registry; call Run to fill it.
func New(cli *clientv3.Client, keys fleetstore.Keys, log *slog.Logger) *Registry {
	return &Registry{cli: cli, keys: keys, log: log, entries: map[string]*entry{}, synced: make(chan struct{})}
}

// Synced is closed once the first full listing is in the cache.
func (r *Registry) Synced() <-chan struct{} { return r.synced }

// Run lists the fleet and follows the watch until ctx ends. When the watch
// falls behind compaction or breaks, it lists again.
func (r *Registry) Run(ctx context.Context) error {
	for {
		rev, err := r.resync(ctx)
		if err == nil {
			err = r.follow(ctx, rev)
		}
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("registry watch restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Registry) resync(ctx context.Context) (int64, error) {
	resp, err := r.cli.Get(ctx, r.keys.Fleet(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list fleet: %w", err)
	}
	entries := map[string]*entry{}
	for _, kv := range resp.Kvs {
		applyPut(r.keys, entries, kv, r.log)
	}
	r.mu.Lock()
	r.entries = entries
	r.revision = resp.Header.Revision
	r.mu.Unlock()
	r.syncOnce.Do(func() { close(r.synced) })
	return resp.Header.Revision, nil
}

func (r *Registry) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := r.cli.Watch(wctx, r.keys.Fleet(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return fmt.Errorf("watch compacted at %d: %w", resp.CompactRevision, err)
			}
			return fmt.Errorf("watch fleet: %w", err)
		}
		r.mu.Lock()
		for _, ev := range resp.Events {
			switch ev.Type {
			case mvccpb.PUT:
				applyPut(r.keys, r.entries, ev.Kv, r.log)
			case mvccpb.DELETE:
				applyDelete(r.keys, r.entries, ev.Kv)
			}
		}
		r.revision = resp.Header.Revision
		r.mu.Unlock()
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch channel closed")
}

func getEntry(entries map[string]*entry, id string) *entry {
	e := entries[id]
	if e == nil {
		e = &entry{used: map[SlotRef]string{}, perGPU: map[uint32]int{}}
		entries[id] = e
	}
	return e
}

func applyPut(keys fleetstore.Keys, entries map[string]*entry, kv *mvccpb.KeyValue, log *slog.Logger) {
	pk, err := keys.Parse(string(kv.Key))
	if err != nil || pk.Kind == fleetstore.KindUnknown {
		return
	}
	e := getEntry(entries, pk.Worker)
	switch pk.Kind {
	case fleetstore.KindWorker:
		w, err := fleetstore.DecodeWorker(kv.Value)
		if err != nil {
			log.Warn("skip undecodable worker record", "key", string(kv.Key), "err", err)
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

func applyDelete(keys fleetstore.Keys, entries map[string]*entry, kv *mvccpb.KeyValue) {
	pk, err := keys.Parse(string(kv.Key))
	if err != nil || pk.Kind == fleetstore.KindUnknown {
		return
	}
	e := entries[pk.Worker]
	if e == nil {
		return
	}
	switch pk.Kind {
	case fleetstore.KindWorker:
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
