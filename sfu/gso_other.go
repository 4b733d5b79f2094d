//go:build !linux

package sfu

import "net"

// gsoAvailable: UDP GSO is Linux only.
func gsoAvailable(*net.UDPConn) bool { return false }

func gsoControl([]byte, int) []byte { return nil }
