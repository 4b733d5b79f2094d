package repotest

import (
	"bytes"
	"net"
	"testing"
)

// PortAttempts bounds how often a test starts a server again on fresh
// ports after a collision (see PortCollision).
const PortAttempts = 4

// FreePort is a port the kernel had free a moment ago; network is "tcp"
// (on 127.0.0.1) or "udp" (on every address, as media servers bind it). Free only when asked: a
// server handed it can find it taken by another test's process, so tests
// that start servers on it check PortCollision and start again.
func FreePort(tb testing.TB, network string) int {
	tb.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", ":0")
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// PortCollision reports whether a server's output (or an error's text)
// says that an address it was told to listen on was in use.
func PortCollision(out []byte) bool {
	return bytes.Contains(out, []byte("address already in use")) ||
		bytes.Contains(out, []byte("port is already in use")) // MinIO's words
}
