//go:build linux

package sfu

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoAvailable reports whether the kernel offers UDP generic segmentation
// offload (UDP_SEGMENT, Linux 4.18+) on conn.
func gsoAvailable(conn *net.UDPConn) bool {
	raw, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = raw.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// gsoControl is the control message that makes the kernel cut one send
// into datagrams of size bytes (the last may be shorter), written into b
// when it is large enough.
func gsoControl(b []byte, size int) []byte {
	if cap(b) < unix.CmsgSpace(2) {
		b = make([]byte, unix.CmsgSpace(2))
	}
	b = b[:unix.CmsgSpace(2)]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}
