package fleetstore_test

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/avatarfleet/avatarfleet/proto/fleetstore"
)

// mirror is a Handler that keeps a copy of the watched keys, as a cache does.
type mirror struct {
	mu       sync.Mutex
	kvs      map[string]string
	rev      int64
	replaces int
	prevs    map[string]string // key → previous value of its last delete
}

func newMirror() *mirror { return &mirror{kvs: map[string]string{}, prevs: map[string]string{}} }

func (m *mirror) Replace(_ context.Context, kvs []fleetstore.KV, rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kvs = map[string]string{}
	for _, kv := range kvs {
		m.kvs[kv.Key] = string(kv.Value)
	}
	m.rev = rev
	m.replaces++
}

func (m *mirror) Apply(_ context.Context, events []fleetstore.Event, rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range events {
		switch e.Type {
		case fleetstore.EventPut:
			m.kvs[e.KV.Key] = string(e.KV.Value)
		case fleetstore.EventDelete:
			delete(m.kvs, e.KV.Key)
			if e.Prev != nil {
				m.prevs[e.KV.Key] = string(e.Prev.Value)
			}
		}
	}
	m.rev = max(m.rev, rev)
}

func (m *mirror) snapshot() (map[string]string, int64, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.kvs), m.rev, m.replaces
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestListWatchFollowsSeveralPrefixes(t *testing.T) {
	s, cli := startStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	put := func(k, v string) int64 {
		resp, err := cli.Put(ctx, k, v)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	put("/a/1", "one")
	put("/b/1", "uno")
	put("/c/1", "not watched")

	m := newMirror()
	done := make(chan error, 1)
	go func() {
		done <- s.ListWatch(ctx, fleetstore.ListWatchOptions{Prefixes: []string{"/a/", "/b/"}, PrevKV: true, Name: "test"}, m)
	}()
	waitFor(t, "first listing", func() bool { kvs, _, _ := m.snapshot(); return len(kvs) == 2 })

	put("/a/2", "two")
	rev := put("/b/2", "dos")
	if _, err := cli.Delete(ctx, "/a/1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "watched changes", func() bool {
		kvs, _, _ := m.snapshot()
		return len(kvs) == 3 && kvs["/b/2"] == "dos" && kvs["/a/1"] == ""
	})
	m.mu.Lock()
	if m.prevs["/a/1"] != "one" {
		t.Errorf("delete of /a/1 came with previous value %q, want %q", m.prevs["/a/1"], "one")
	}
	m.mu.Unlock()
	if kvs, _, _ := m.snapshot(); kvs["/c/1"] != "" {
		t.Errorf("unwatched prefix leaked into the mirror: %v", kvs)
	}

	// A compaction under a live watch changes nothing it sees.
	last := put("/a/3", "three")
	if _, err := cli.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	put("/b/3", "tres")
	waitFor(t, "converged after compaction", func() bool {
		kvs, r, _ := m.snapshot()
		return kvs["/a/3"] == "three" && kvs["/b/3"] == "tres" && r > rev
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ListWatch returned %v after cancel, want nil", err)
	}
}

func TestListWatchResyncTimerListsAgain(t *testing.T) {
	s, cli := startStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cli.Put(ctx, "/r/1", "x"); err != nil {
		t.Fatal(err)
	}
	m := newMirror()
	done := make(chan error, 1)
	go func() {
		done <- s.ListWatch(ctx, fleetstore.ListWatchOptions{Prefixes: []string{"/r/"}, Resync: 50 * time.Millisecond}, m)
	}()
	waitFor(t, "three listings", func() bool { _, _, n := m.snapshot(); return n >= 3 })
	cancel()
	<-done
}

func TestListWatchNeedsAPrefix(t *testing.T) {
	s, _ := startStore(t)
	if err := s.ListWatch(context.Background(), fleetstore.ListWatchOptions{}, newMirror()); err == nil {
		t.Fatal("ListWatch with no prefix: want an error")
	}
}
