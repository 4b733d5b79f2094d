// Package embeddedtest starts the embedded etcd for other packages' tests:
// one real member on a temporary directory, without fsync, stopped with the
// test.
package embeddedtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/avatarfleet/avatarfleet/proto/embedded"
)

// Etcd starts a one-member etcd and a client of it; both are closed when
// tb ends (the client first).
func Etcd(tb testing.TB) (*embedded.EtcdCluster, *clientv3.Client) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := embedded.StartEtcd(ctx, embedded.EtcdOptions{Dir: tb.TempDir(), NoFsync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cluster.Close)
	cli, err := cluster.Client()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cluster, cli
}
