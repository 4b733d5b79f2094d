package embedded

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// takenPicker hands out the address of a held listener for the picks
// named in taken (counted from 0), and free addresses otherwise.
type takenPicker struct {
	held  string
	taken map[int]bool

	mu    sync.Mutex
	picks int
}

func (p *takenPicker) pick() (string, error) {
	p.mu.Lock()
	i := p.picks
	p.picks++
	p.mu.Unlock()
	if p.taken[i] {
		return p.held, nil
	}
	return freeLoopbackAddr()
}

func holdPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// TestStartEtcdPicksAgainWhenAPickedPortIsTaken: a port StartEtcd picked
// and someone else bound before etcd did (the race behind "address already
// in use" on a busy machine) makes it start again on fresh ports, for a
// client or a peer port, for one member or a member of three whose
// siblings had already written their data; a client address the caller
// gave that is in use fails at once.
func TestStartEtcdPicksAgainWhenAPickedPortIsTaken(t *testing.T) {
	cases := []struct {
		name    string
		members int
		taken   map[int]bool // which picks return the held address
		given   bool         // the held address is the caller's client address
		wantErr bool
	}{
		// One member picks client then peer.
		{name: "client port of one member", members: 1, taken: map[int]bool{0: true}},
		{name: "peer port of one member", members: 1, taken: map[int]bool{1: true}},
		{name: "taken on every attempt", members: 1, taken: map[int]bool{0: true, 2: true, 4: true, 6: true}, wantErr: true},
		// Picks 0..5 are m0 client, m0 peer, m1 client, ...: m2's peer
		// fails after m0 and m1 started and wrote their data.
		{name: "peer port of the last of three members", members: 3, taken: map[int]bool{5: true}},
		// m1's peer fails with only m0 started: m0 never has a quorum,
		// and closing it must not wait for it to be ready.
		{name: "peer port of the second of three members", members: 3, taken: map[int]bool{3: true}},
		{name: "given client address in use", members: 1, given: true, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			held := holdPort(t)
			p := &takenPicker{held: held, taken: tc.taken}
			opts := EtcdOptions{Dir: t.TempDir(), Members: tc.members, NoFsync: true, KeepFiles: true, pickAddr: p.pick}
			if tc.given {
				opts.ClientAddrs = []string{held}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := StartEtcd(ctx, opts)
			if tc.wantErr {
				if err == nil {
					c.Close()
					t.Fatal("started, want an error")
				}
				if !strings.Contains(err.Error(), held) {
					t.Errorf("error %q does not name the taken address %s", err, held)
				}
				if tc.given && errors.Is(err, errPickedPortTaken) {
					t.Errorf("a given address in use is reported as a picked one: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			defer c.Close()
			for _, ep := range c.Endpoints() {
				if strings.Contains(ep, held) {
					t.Errorf("endpoint %s is the taken address", ep)
				}
			}
			if p.picks <= 2*tc.members {
				t.Errorf("%d picks for %d members: it never picked again", p.picks, tc.members)
			}
			cli, err := c.Client()
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := cli.Put(ctx, "k", "v"); err != nil {
				t.Fatalf("put after starting again: %v", err)
			}
			if got := len(c.members); got != tc.members {
				t.Errorf("%d members run, want %d", got, tc.members)
			}
		})
	}
}
