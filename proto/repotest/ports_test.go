package repotest

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePortCanBeBoundAndPortCollisionSeesItTaken(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		p := FreePort(t, network)
		if p <= 0 || p > 65535 {
			t.Fatalf("%s port %d", network, p)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		var err error
		if network == "udp" {
			var c net.PacketConn
			if c, err = net.ListenPacket("udp", addr); err == nil {
				_, err = net.ListenPacket("udp", addr)
				c.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen("tcp", addr); err == nil {
				_, err = net.Listen("tcp", addr)
				l.Close()
			}
		}
		if err == nil {
			t.Fatalf("%s %s bound twice", network, addr)
		}
		if !PortCollision([]byte(err.Error())) {
			t.Errorf("PortCollision misses %q", err)
		}
	}
	for _, s := range []string{"", "connection refused", "listen tcp: lookup nowhere: no such host"} {
		if PortCollision([]byte(s)) {
			t.Errorf("PortCollision(%q) = true", s)
		}
	}
}
