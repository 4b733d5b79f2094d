package fleetstore

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Names of the etcd users and roles of a fleet.
const (
	RootUser         = "root"
	ControlPlaneUser = "avatarfleet-controlplane"
	ControlPlaneRole = "avatarfleet-controlplane"
)

// WorkerUser is the etcd user of worker id.
func WorkerUser(id string) string { return "avatarfleet-worker-" + id }

// WorkerRole is the etcd role of worker id.
func WorkerRole(id string) string { return "avatarfleet-worker-" + id }

// KeyRange is a range of keys an etcd role grants: Key alone, or every key
// from Key up to (not including) End; Prefix builds the range of a prefix.
type KeyRange struct {
	Key, End string
	Write    bool
}

// Prefix is the range of every key under p.
func Prefix(p string, write bool) KeyRange {
	return KeyRange{Key: p, End: clientv3.GetPrefixRangeEnd(p), Write: write}
}

// ControlPlaneRange is what a control plane may read and write: the whole
// fleet prefix.
func (k Keys) ControlPlaneRange() []KeyRange { return []KeyRange{Prefix(k.Prefix(), true)} }

// WorkerRanges are the keys worker id reads and writes, and nothing else:
//
//   - fleet/workers/<id>: its record (registration, under its lease);
//   - fleet/slots/<id>/: its slots (watched; a slot is deleted when the
//     worker ends its session);
//   - fleet/health/<id>: the down mark a control plane puts under the
//     worker's lease (revoking a lease needs write access to every key
//     attached to it). A worker can thus clear its own down mark; it
//     answers its own health checks anyway, so this gives it nothing new;
//   - sessions/: the records of its sessions, read when a slot appears and
//     rewritten when the worker ends a session;
//   - owners/: the owner's quota mark, deleted in the transaction that
//     ends a session;
//   - speech/: the durable speech queues, which a worker shortens as it
//     speaks and clears when it ends a session (keyed by session id like
//     the records, so the grant is exactly as wide as sessions/).
//
// etcd grants key ranges, not record contents: session records are keyed
// by session id, not by worker, so a worker's role covers every session
// record: a worker can rewrite any session's record (never take another
// worker's slot), and likewise clear any owner's quota mark. Everything else under fleet/ that placement trusts
// (other workers' records and slots, drain marks), idempotency keys,
// fleet settings and the leader election stay out of its reach.
func (k Keys) WorkerRanges(id string) []KeyRange {
	return []KeyRange{
		{Key: k.Worker(id), Write: true},
		Prefix(k.WorkerSlots(id), true),
		{Key: k.Health(id), Write: true},
		Prefix(k.Sessions(), true),
		// Ending a session deletes its owner's quota mark in the same
		// transaction, so a worker writes the owner index as well.
		Prefix(k.Owners(), true),
		// Speech progress, and clearing the queue when ending a session.
		Prefix(k.Speeches(), true),
	}
}

// Auth are the credentials SetupAuth creates.
type Auth struct {
	// RootPassword is the password of etcd's root user, which enabling
	// authentication requires.
	RootPassword string
	// ControlPlanePassword is the password of ControlPlaneUser.
	ControlPlanePassword string
	// Workers maps worker ids to the passwords of their users.
	Workers map[string]string
	// ControlPlaneAdmin also grants ControlPlaneUser etcd's root role, for
	// an etcd that serves this fleet alone. The reason is speed: at every
	// put that attaches a lease, etcd checks that a user without the root
	// role may write each key already attached to that lease, reading the
	// user from its backend for each. The control plane attaches every
	// reservation to its worker's lease, so without the root role a
	// placement costs etcd's apply loop time in proportion to the sessions
	// on that worker: under a storm of creates the loop falls seconds
	// behind and every lease in the fleet expires. The price is the
	// ControlPlaneRange bound: with the root role the control plane may
	// read and write all of etcd and manage its users.
	ControlPlaneAdmin bool
}

// SetupAuth creates the fleet's roles and users under k on the etcd cli
// talks to (root and ControlPlaneUser, and a user and role per worker) and
// enables authentication. It may be run again (with a root client once
// authentication is on) to change passwords or add workers.
func SetupAuth(ctx context.Context, cli *clientv3.Client, k Keys, a Auth) error {
	if a.RootPassword == "" || a.ControlPlanePassword == "" {
		return errors.New("etcd auth: root and control-plane passwords are required")
	}
	if err := putUser(ctx, cli, RootUser, a.RootPassword, "root"); err != nil {
		return err
	}
	if err := putRole(ctx, cli, ControlPlaneRole, k.ControlPlaneRange()); err != nil {
		return err
	}
	if err := putUser(ctx, cli, ControlPlaneUser, a.ControlPlanePassword, ControlPlaneRole); err != nil {
		return err
	}
	if a.ControlPlaneAdmin {
		if _, err := cli.UserGrantRole(ctx, ControlPlaneUser, "root"); err != nil {
			return fmt.Errorf("etcd auth: grant root to %s: %w", ControlPlaneUser, err)
		}
	} else if _, err := cli.UserRevokeRole(ctx, ControlPlaneUser, "root"); err != nil && !errors.Is(err, rpctypes.ErrRoleNotGranted) {
		return fmt.Errorf("etcd auth: revoke root from %s: %w", ControlPlaneUser, err)
	}
	for id, pw := range a.Workers {
		if err := AddWorkerAuth(ctx, cli, k, id, pw); err != nil {
			return err
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcd auth: enable: %w", err)
	}
	return nil
}

// AddWorkerAuth creates (or resets) the user and role of worker id.
func AddWorkerAuth(ctx context.Context, cli *clientv3.Client, k Keys, id, password string) error {
	if !ValidName(id) {
		return fmt.Errorf("etcd auth: invalid worker id %q", id)
	}
	if password == "" {
		return fmt.Errorf("etcd auth: worker %s: empty password", id)
	}
	if err := putRole(ctx, cli, WorkerRole(id), k.WorkerRanges(id)); err != nil {
		return err
	}
	return putUser(ctx, cli, WorkerUser(id), password, WorkerRole(id))
}

// putRole creates role (or keeps an existing one) and grants it ranges.
func putRole(ctx context.Context, cli *clientv3.Client, role string, ranges []KeyRange) error {
	if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("etcd auth: add role %s: %w", role, err)
	}
	for _, r := range ranges {
		perm := clientv3.PermissionType(clientv3.PermRead)
		if r.Write {
			perm = clientv3.PermissionType(clientv3.PermReadWrite)
		}
		if _, err := cli.RoleGrantPermission(ctx, role, r.Key, r.End, perm); err != nil {
			return fmt.Errorf("etcd auth: grant %s on %q: %w", role, r.Key, err)
		}
	}
	return nil
}

// putUser creates user with password (or resets the password of an
// existing one) and grants it role.
func putUser(ctx context.Context, cli *clientv3.Client, user, password, role string) error {
	_, err := cli.UserAdd(ctx, user, password)
	if errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		_, err = cli.UserChangePassword(ctx, user, password)
	}
	if err != nil {
		return fmt.Errorf("etcd auth: user %s: %w", user, err)
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("etcd auth: grant %s to %s: %w", role, user, err)
	}
	return nil
}
