// Package fleetstore is the fleet's state in etcd: the key layout, the record
// codecs, and the transactions that change records. The control plane and the
// workers both go through it, so each invariant that rests on a transaction
// (no over-committed GPU, a slot freed exactly once) is written in one place.
//
// Layout, under a prefix (default "/avatarfleet/"):
//
//	fleet/workers/<worker>              Worker record        (worker's lease)
//	fleet/slots/<worker>/<gpu>/<slot>   session id           (worker's lease)
//	fleet/drain/<worker>                drained by an admin  (no lease)
//	fleet/health/<worker>               "down"               (worker's lease)
//	sessions/<session>                  Session record
//	idempotency/<owner>/<key>           session id           (retention lease)
//	owners/<owner>/sessions/<session>   ""                   (index: until the record expires)
//	owners/<owner>/live/<session>       ""                   (quota: while the session is live)
//	speech/<session>/<speech id>        text not yet spoken  (until spoken, interrupted or the session ends)
//	leader                              control-plane election
//	config/<name>                       fleet-wide settings
//
// Everything a placement must see lives under fleet/, so one watch keeps a
// control plane's cache of it current.
package fleetstore

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultPrefix is the key prefix a fleet uses unless told otherwise.
const DefaultPrefix = "/avatarfleet/"

// Keys builds and parses the fleet's etcd keys under one prefix.
type Keys struct {
	prefix string
}

// NewKeys returns the key layout under prefix ("" means DefaultPrefix).
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return Keys{prefix: prefix}
}

// Prefix is the root of every key of the fleet.
func (k Keys) Prefix() string { return k.prefix }

// Fleet is the prefix of everything placement watches.
func (k Keys) Fleet() string { return k.prefix + "fleet/" }

// Workers is the prefix of worker records.
func (k Keys) Workers() string { return k.prefix + "fleet/workers/" }

// Worker is the key of one worker's record.
func (k Keys) Worker(id string) string { return k.Workers() + id }

// Slots is the prefix of all slot reservations.
func (k Keys) Slots() string { return k.prefix + "fleet/slots/" }

// WorkerSlots is the prefix of one worker's slot reservations.
func (k Keys) WorkerSlots(worker string) string { return k.Slots() + worker + "/" }

// Slot is the key of one slot on one GPU of a worker.
func (k Keys) Slot(worker string, gpu, slot uint32) string {
	return k.WorkerSlots(worker) + strconv.FormatUint(uint64(gpu), 10) + "/" + strconv.FormatUint(uint64(slot), 10)
}

// Drains is the prefix of admin drain marks.
func (k Keys) Drains() string { return k.prefix + "fleet/drain/" }

// Drain is the key that marks a worker drained by an admin.
func (k Keys) Drain(worker string) string { return k.Drains() + worker }

// Healths is the prefix of health marks.
func (k Keys) Healths() string { return k.prefix + "fleet/health/" }

// Health is the key that marks a worker down (failed health checks).
func (k Keys) Health(worker string) string { return k.Healths() + worker }

// Sessions is the prefix of session records.
func (k Keys) Sessions() string { return k.prefix + "sessions/" }

// Session is the key of one session record.
func (k Keys) Session(id string) string { return k.Sessions() + id }

// Idempotency is the key of one client's idempotency key.
func (k Keys) Idempotency(owner, key string) string {
	return k.prefix + "idempotency/" + owner + "/" + key
}

// OwnerSessions is the prefix of one owner's session index: one key per
// session record of that owner, ordered by session id.
func (k Keys) OwnerSessions(owner string) string { return k.Owners() + owner + "/sessions/" }

// Owners is the prefix of every per-owner index and quota mark.
func (k Keys) Owners() string { return k.prefix + "owners/" }

// OwnerSession is the index key of one session of an owner.
func (k Keys) OwnerSession(owner, id string) string { return k.OwnerSessions(owner) + id }

// OwnerLive is the prefix of one owner's live-session marks (the quota).
func (k Keys) OwnerLive(owner string) string { return k.Owners() + owner + "/live/" }

// OwnerLiveSession is the live mark of one session of an owner.
func (k Keys) OwnerLiveSession(owner, id string) string { return k.OwnerLive(owner) + id }

// Speeches is the prefix of every session's durable speech queue.
func (k Keys) Speeches() string { return k.prefix + "speech/" }

// SessionSpeech is the prefix of one session's speech queue.
func (k Keys) SessionSpeech(session string) string { return k.Speeches() + session + "/" }

// Speech is the key of one queued text of a session.
func (k Keys) Speech(session, speechID string) string { return k.SessionSpeech(session) + speechID }

// Leader is the prefix the control-plane replicas campaign on.
func (k Keys) Leader() string { return k.prefix + "leader" }

// Config is the key of one fleet-wide setting.
func (k Keys) Config(name string) string { return k.prefix + "config/" + name }

// KeyKind says which kind of fleet/ key a key is.
type KeyKind int

// The kinds of keys under fleet/.
const (
	KindUnknown KeyKind = iota
	KindWorker
	KindSlot
	KindDrain
	KindHealth
)

// ParsedKey is a fleet/ key taken apart.
type ParsedKey struct {
	Kind   KeyKind
	Worker string
	GPU    uint32
	Slot   uint32
}

// Parse takes a key under Fleet() apart.
func (k Keys) Parse(key string) (ParsedKey, error) {
	rest, ok := strings.CutPrefix(key, k.Fleet())
	if !ok {
		return ParsedKey{}, fmt.Errorf("key %q is not under %q", key, k.Fleet())
	}
	kind, rest, _ := strings.Cut(rest, "/")
	switch kind {
	case "workers":
		return ParsedKey{Kind: KindWorker, Worker: rest}, nil
	case "drain":
		return ParsedKey{Kind: KindDrain, Worker: rest}, nil
	case "health":
		return ParsedKey{Kind: KindHealth, Worker: rest}, nil
	case "slots":
		parts := strings.Split(rest, "/")
		if len(parts) != 3 {
			return ParsedKey{}, fmt.Errorf("slot key %q: want <worker>/<gpu>/<slot>", key)
		}
		gpu, err := strconv.ParseUint(parts[1], 10, 32)
		if err != nil {
			return ParsedKey{}, fmt.Errorf("slot key %q: gpu: %w", key, err)
		}
		slot, err := strconv.ParseUint(parts[2], 10, 32)
		if err != nil {
			return ParsedKey{}, fmt.Errorf("slot key %q: slot: %w", key, err)
		}
		return ParsedKey{Kind: KindSlot, Worker: parts[0], GPU: uint32(gpu), Slot: uint32(slot)}, nil
	}
	return ParsedKey{Kind: KindUnknown}, nil
}
