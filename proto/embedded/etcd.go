// Package embedded starts etcd and NATS inside the process: the built-in
// default of `make run`, and the real servers the tests run against.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdOptions configures an embedded etcd cluster.
type EtcdOptions struct {
	// Dir holds each member's data in Dir/<name>.
	Dir string
	// Members is the cluster size (1 when 0).
	Members int
	// ClientAddrs are the client listen addresses, one per member; empty
	// entries (or a short list) pick free loopback ports.
	ClientAddrs []string
	// Logger receives etcd's own logs; nil silences them (embedded etcd logs
	// harmless errors on close).
	Logger *zap.Logger
	// NoFsync trades durability for speed (tests only).
	NoFsync bool
	// StartTimeout bounds the wait for the cluster to elect a leader.
	StartTimeout time.Duration
	// SnapshotCount is how many applied entries trigger a raft snapshot
	// (0: etcd's default). Benchmarks that write a lot and then close raise
	// it: etcd panics when closed while it saves a snapshot.
	SnapshotCount uint64
	// KeepFiles turns etcd's purge of old WAL and snapshot files off, for
	// short-lived test and benchmark clusters: a purge that runs while all
	// members close at once can fail, and etcd then exits the process
	// (seen in the placement benchmark; the files are deleted with the
	// test's directory anyway).
	KeepFiles bool
	// ClientTLS, when set, serves clients over TLS (https:// endpoints)
	// with its certificate and key; its TrustedCAFile with ClientCertAuth
	// also requires client certificates. Peers stay on loopback plaintext.
	ClientTLS *transport.TLSInfo
	// BcryptCost is the cost of hashing user passwords (0: etcd's default);
	// tests that enable authentication lower it to bcrypt's minimum, 4.
	BcryptCost uint

	// pickAddr picks a free loopback address (freeLoopbackAddr when nil);
	// this package's tests hand out taken ones.
	pickAddr func() (string, error)
}

// EtcdCluster is a running embedded etcd cluster.
type EtcdCluster struct {
	members   []*embed.Etcd
	endpoints []string
	closeOnce sync.Once

	mu      sync.Mutex
	stopped map[int]bool
	closing sync.WaitGroup // members killed, still closing
}

// pickAttempts bounds how often StartEtcd starts again on fresh ports when
// a port it picked itself was taken before etcd bound it.
const pickAttempts = 4

// errPickedPortTaken marks a start that failed because a loopback port
// StartEtcd picked was bound by someone else in between: a free port is
// only free when it is picked, and on a busy machine another process can
// take it first.
var errPickedPortTaken = errors.New("a picked port was taken")

// StartEtcd starts an embedded etcd cluster and waits until it serves.
// When a port it picked (a peer port, or a client port not given in
// ClientAddrs) is taken before etcd binds it, it starts again on fresh
// ports; a given client address that is in use fails the start.
func StartEtcd(ctx context.Context, opts EtcdOptions) (*EtcdCluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("start embedded etcd: no data directory")
	}
	n := opts.Members
	if n <= 0 {
		n = 1
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.pickAddr == nil {
		opts.pickAddr = freeLoopbackAddr
	}
	for attempt := 1; ; attempt++ {
		created := missingDirs(opts.Dir, n)
		c, err := startEtcdOnce(ctx, opts, n)
		if err == nil || attempt == pickAttempts || !errors.Is(err, errPickedPortTaken) {
			return c, err
		}
		// A member that got as far as writing its data was told the
		// cluster's old peer addresses: start those members afresh.
		for _, dir := range created {
			if rerr := os.RemoveAll(dir); rerr != nil {
				return nil, fmt.Errorf("%w (and removing %s to start again: %v)", err, dir, rerr)
			}
		}
	}
}

// missingDirs are the member directories under dir that do not exist yet.
func missingDirs(dir string, n int) []string {
	var out []string
	for i := range n {
		d := filepath.Join(dir, memberName(i))
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			out = append(out, d)
		}
	}
	return out
}

func memberName(i int) string { return fmt.Sprintf("m%d", i) }

// startEtcdOnce is one attempt of StartEtcd, on freshly picked ports.
func startEtcdOnce(ctx context.Context, opts EtcdOptions, n int) (*EtcdCluster, error) {
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	type member struct {
		name         string
		client, peer url.URL
	}
	members := make([]member, n)
	var initial []string
	clientScheme := "http"
	if opts.ClientTLS != nil {
		clientScheme = "https"
	}
	var picked []string // the addresses chosen here, not by the caller
	for i := range members {
		name := memberName(i)
		clientAddr := ""
		if i < len(opts.ClientAddrs) {
			clientAddr = opts.ClientAddrs[i]
		}
		if clientAddr == "" {
			var err error
			if clientAddr, err = opts.pickAddr(); err != nil {
				return nil, err
			}
			picked = append(picked, clientAddr)
		}
		peerAddr, err := opts.pickAddr()
		if err != nil {
			return nil, err
		}
		picked = append(picked, peerAddr)
		members[i] = member{
			name:   name,
			client: url.URL{Scheme: clientScheme, Host: clientAddr},
			peer:   url.URL{Scheme: "http", Host: peerAddr},
		}
		initial = append(initial, name+"="+members[i].peer.String())
	}

	tokenKey, tokenKeyDone, err := authTokenKey(opts.Dir)
	if err != nil {
		return nil, err
	}
	defer tokenKeyDone()
	c := &EtcdCluster{}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		startErr error
	)
	// Members of a new cluster must start together: each waits for a quorum.
	for _, m := range members {
		cfg := embed.NewConfig()
		cfg.Name = m.name
		cfg.Dir = filepath.Join(opts.Dir, m.name)
		cfg.ListenClientUrls = []url.URL{m.client}
		cfg.AdvertiseClientUrls = []url.URL{m.client}
		cfg.ListenPeerUrls = []url.URL{m.peer}
		cfg.AdvertisePeerUrls = []url.URL{m.peer}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "avatarfleet"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logger)
		cfg.UnsafeNoFsync = opts.NoFsync
		cfg.AuthToken = authTokenConfig(tokenKey)
		if opts.ClientTLS != nil {
			cfg.ClientTLSInfo = *opts.ClientTLS
		}
		if opts.BcryptCost > 0 {
			cfg.BcryptCost = opts.BcryptCost
		}
		if opts.SnapshotCount > 0 {
			cfg.SnapshotCount = opts.SnapshotCount
		}
		if opts.KeepFiles {
			cfg.MaxSnapFiles, cfg.MaxWalFiles = 0, 0
		}
		// Old revisions are only needed by watchers catching up.
		cfg.AutoCompactionMode = embed.CompactorModePeriodic
		cfg.AutoCompactionRetention = "5m"
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.Close()
			if takenPort(err, picked) {
				err = fmt.Errorf("%w: %w", errPickedPortTaken, err)
			}
			return nil, fmt.Errorf("start embedded etcd member %s: %w", m.name, err)
		}
		c.members = append(c.members, e)
		c.endpoints = append(c.endpoints, m.client.String())
	}
	for _, e := range c.members {
		wg.Go(func() {
			select {
			case <-e.Server.ReadyNotify():
			case err := <-e.Err():
				mu.Lock()
				startErr = errors.Join(startErr, err)
				mu.Unlock()
			case <-time.After(opts.StartTimeout):
				mu.Lock()
				startErr = errors.Join(startErr, errors.New("embedded etcd: timed out waiting for a leader"))
				mu.Unlock()
			case <-ctx.Done():
				mu.Lock()
				startErr = errors.Join(startErr, ctx.Err())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if startErr != nil {
		c.Close()
		return nil, startErr
	}
	return c, nil
}

// Endpoints are the client URLs of every member.
func (c *EtcdCluster) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// Member returns member i, for tests that stop one.
func (c *EtcdCluster) Member(i int) *embed.Etcd { return c.members[i] }

// Client returns a new client of the whole cluster; the caller closes it.
// It speaks plaintext without credentials: a cluster started with
// ClientTLS or with authentication on needs a client of its own
// (fleetconn.Etcd).
func (c *EtcdCluster) Client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", c.endpoints, err)
	}
	return cli, nil
}

// Leader is the index of the member that leads the cluster now, or -1
// when no running member knows a leader.
func (c *EtcdCluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.members {
		if c.stopped[i] {
			continue
		}
		lead := e.Server.Leader()
		for j, m := range c.members {
			if !c.stopped[j] && m.Server.MemberID() == lead {
				return j
			}
		}
	}
	return -1
}

// StopMember stops member i, as a crash of its process would (tests of
// leader loss); Close later leaves it alone.
func (c *EtcdCluster) StopMember(i int) {
	c.mu.Lock()
	if c.stopped == nil {
		c.stopped = map[int]bool{}
	}
	already := c.stopped[i]
	c.stopped[i] = true
	c.mu.Unlock()
	if !already {
		closeMember(c.members[i])
	}
}

// KillMember stops member i the way a crash does: its raft node stops at
// once, without handing leadership on (a graceful stop transfers it first,
// which hides a leader's loss), and its connections close after.
func (c *EtcdCluster) KillMember(i int) {
	c.mu.Lock()
	if c.stopped == nil {
		c.stopped = map[int]bool{}
	}
	already := c.stopped[i]
	c.stopped[i] = true
	c.mu.Unlock()
	if already {
		return
	}
	c.members[i].Server.HardStop()
	c.closing.Go(c.members[i].Close)
}

// Close stops every member.
func (c *EtcdCluster) Close() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		stopped := c.stopped
		c.stopped = map[int]bool{}
		for i := range c.members {
			c.stopped[i] = true
		}
		c.mu.Unlock()
		var wg sync.WaitGroup
		for i, e := range c.members {
			if !stopped[i] {
				wg.Go(func() { closeMember(e) })
			}
		}
		wg.Wait()
		c.closing.Wait()
	})
}

// closeMember closes one member. embed.Etcd.Close first shuts the client
// servers down, and those start only once the member is ready (it has
// joined a quorum): a member that never got there (the others of a new
// cluster failed to start) would hold Close, and the test or the
// process closing it, forever. Its server is stopped first then, which
// lets them go.
func closeMember(e *embed.Etcd) {
	select {
	case <-e.Server.ReadyNotify():
	default:
		e.Server.HardStop()
	}
	e.Close()
}

// takenPort reports whether err is a listen that failed because one of
// the addresses in picked is in use. etcd reports the listen error as
// text, so the address is matched in it.
func takenPort(err error, picked []string) bool {
	msg := err.Error()
	if !errors.Is(err, syscall.EADDRINUSE) && !strings.Contains(msg, "address already in use") {
		return false
	}
	for _, a := range picked {
		if strings.Contains(msg, a) {
			return true
		}
	}
	return false
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
